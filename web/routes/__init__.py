"""HTTP routes: HTML pages and the JSON API."""
