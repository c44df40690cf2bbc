"""The read path: text and image queries against the store."""
