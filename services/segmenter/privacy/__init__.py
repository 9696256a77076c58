"""The user's rights in the segmenter service: erase and export what it holds on a person."""
