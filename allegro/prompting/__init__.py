"""Prompt help (issue 24): a language model rewrites a few words into the detailed caption
Allegro was trained on, and a story into a storyboard's shots. No Gradio here.

``choose.make_helper`` picks the backend ``--prompt-model`` names (``local``: transformers;
``endpoint``: an OpenAI-compatible server); ``instructions`` holds what the model is told.
"""
