"""The one-click launcher's helper (``run.sh``, ``run.bat`` and the Pinokio scripts call
``python -m launcher``). Standard library only: it runs before anything is installed, with
whatever Python the scripts found, so it never imports torch, Gradio or the engine's heavy
modules (``allegro.costs``, pure Python, is the one engine module it reads).
"""
