"""The user's rights in the dispatcher service: erase and export what it holds on a person."""
