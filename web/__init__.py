"""The web front end: server-rendered pages and a JSON API over the search package."""
