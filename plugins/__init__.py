"""Built-in plugins (installed as ``adapterhub.plugins``)."""
