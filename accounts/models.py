from django.contrib.auth.models import AbstractUser


class User(AbstractUser):
    """The project's user; custom from day one so fields can be added without a migration dance."""
