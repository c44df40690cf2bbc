"""The write path: scan folders, decode, embed, and keep the catalog and Chroma in step."""
