"""Demonstration datasets in the LeRobot v3.0 format: writing, reading, editing, training views."""
