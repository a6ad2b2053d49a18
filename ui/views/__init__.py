"""Small views that only render what the session and the bridge's cache hold."""
