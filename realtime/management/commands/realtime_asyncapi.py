"""``manage.py realtime_asyncapi``: write the AsyncAPI 3.0 document of the WebSocket protocol.

The document is generated from the event registry and the declared schemas
(:mod:`realtime.protocol.asyncapi`); ``tests/specs/validate_asyncapi.mjs`` validates it
with the official AsyncAPI parser. docs/specs.md has the whole workflow.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import yaml
from django.core.management.base import BaseCommand, CommandError, CommandParser

from realtime.protocol_docs import asyncapi_document


class Command(BaseCommand):
    help = "Write the AsyncAPI 3.0 document of the WebSocket protocol (stdout unless --output)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--output", "-o", help="file to write (default: stdout)")
        parser.add_argument("--format", choices=("json", "yaml"), default="json", help="default: json")
        parser.add_argument("--host", default="127.0.0.1:8000", help="default of the server's host variable")

    def handle(self, *args: Any, **options: Any) -> None:
        # A JSON round trip: a plain tree, so YAML needs no anchors for shared sub-dicts.
        document = json.loads(json.dumps(asyncapi_document(options["host"])))
        if options["format"] == "yaml":
            text = yaml.safe_dump(document, sort_keys=False, allow_unicode=True)
        else:
            text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
        output = options["output"]
        if output is None or output == "-":
            sys.stdout.write(text)
            return
        try:
            with open(output, "w", encoding="utf-8") as handle:
                handle.write(text)
        except OSError as exc:
            raise CommandError(f"cannot write {output}: {exc.strerror}") from None
        self.stderr.write(f"wrote {output}")
