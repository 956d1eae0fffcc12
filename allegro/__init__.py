"""Allegro Studio engine: text-to-video with diffusers' AllegroPipeline.

This package never imports Gradio. Heavy libraries (torch, diffusers) are imported
lazily by the modules that need them, so ``import allegro`` stays cheap.
"""

__version__ = "0.1.0"
