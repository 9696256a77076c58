"""The user's rights in the scheduler service: erase and export what it holds on a person."""
