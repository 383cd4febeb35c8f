"""Scheduled sending: campaigns and courses, planning each run's recipients, mass-send tasks."""
