"""Allegro-TI2V (text + image to video): a port of rhymes-ai's official model onto diffusers.

``transformer`` adds the three TI2V input branches to diffusers' ``AllegroTransformer3DModel``;
``condition`` prepares the condition frames exactly as the official code does; ``pipeline``
feeds them to the transformer at every step on top of diffusers' ``AllegroPipeline``.
"""
