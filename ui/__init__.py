"""Allegro Studio's Gradio front end.

Pure modules hold the logic and are tested without a browser: ``config`` (flags and
environment), ``presets`` (controls <-> requests), ``gallery`` (the output folder),
``estimates`` (cost hints), ``zerogpu`` (Spaces durations and refusals), ``formatting``,
``model_status`` (background loading) and ``jobs`` (the engine in a worker thread).
``studio`` adapts them to Gradio handlers and ``layout`` builds the page. Nothing here
imports torch at import time.
"""
