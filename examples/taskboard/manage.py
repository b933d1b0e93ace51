#!/usr/bin/env python
"""The task board's manage.py: ``migrate``, ``create_board``, ``add_task`` and the realtime app's ``serve``."""

import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "taskboard_site.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
