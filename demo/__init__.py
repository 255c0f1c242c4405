"""`make demo`: the main job on an embedded default, against a real masakari-api."""
