"""Serving: SavedModel export, image tagging, tag-based retrieval and the TF Serving client."""
