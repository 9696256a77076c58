"""The user's rights in the profiles service: erase and export what it holds on a person."""
