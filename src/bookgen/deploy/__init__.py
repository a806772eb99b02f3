"""Offline checks of deploy/: compose, the kustomize overlays, their custom kinds and rules."""
