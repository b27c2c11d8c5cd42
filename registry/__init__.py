"""Adapter storage (installed as ``adapterhub.registry``)."""
