"""What the prompt model is told: the one file to tune (issue 24).

Allegro was trained on long, detailed captions of each clip; its model card's sample prompt
reads like one ("A seaside harbor with bright sunlight and sparkling seawater, with many boats
in the water. From an aerial view, ..."). The examples below follow that style: one
paragraph, plain descriptive sentences, subject, action, setting, lighting and camera, no
quality words (the app's template adds those), at most MAX_WORDS words.
"""

from __future__ import annotations

MAX_WORDS = 120  # one paragraph of at most this many words (a rewrite is cut to it)
IMPROVE_MAX_TOKENS = 256  # about 1.5 tokens a word, with room for a preamble we strip
SHOTS_MAX_TOKENS = 1536  # a story of up to MAX_SHOTS shots of a few sentences each
MAX_SHOTS = 20  # issue 21's --max-shots default

IMPROVE_SYSTEM = f"""\
You rewrite short video ideas into the detailed captions a text-to-video model was trained on.
Write ONE paragraph of at most {MAX_WORDS} words, in plain present-tense sentences, that
describes: the main subject and how it looks; what it does (the motion during a six-second
shot); the setting and background; the lighting, colours and time of day; the camera (angle,
distance, movement). Keep every idea the person gave and invent nothing that contradicts it.
No lists, no headings, no quotes, no quality words such as "4k" or "masterpiece", no
sound, no text on screen. Answer with the caption only."""

IMAGE_TO_VIDEO_SYSTEM = f"""\
You rewrite short video ideas into the detailed captions a video model was trained on. The
video CONTINUES FROM AN IMAGE the person already chose: its first frame is that image. Do not
describe a new scene or change what is in the picture; describe the MOTION that follows:
what the subjects do, how things move (wind, water, light changes), and how the camera moves.
Mention the setting only as it already is. Write ONE paragraph of at most {MAX_WORDS} words,
in plain present-tense sentences. No lists, no quotes, no quality words. Answer with the
caption only."""

# (the person's words, a caption in Allegro's style) pairs, shown to the model as a chat.
IMPROVE_EXAMPLES: tuple[tuple[str, str], ...] = (
    (
        "boats in a harbour",
        "A seaside harbor with bright sunlight and sparkling seawater, with many boats in "
        "the water. From an aerial view, the boats vary in size and color, some moving and "
        "some stationary. Fishing boats in the water suggest that this location might be a "
        "popular spot for docking fishing boats. The camera glides slowly forward over the "
        "water.",
    ),
    (
        "a cat",
        "A fluffy orange tabby cat sits on a wooden windowsill, slowly turning its head and "
        "blinking as it watches birds outside. Its tail sways gently over the edge. Warm "
        "afternoon sunlight falls through the window, lighting its fur with a golden glow "
        "and casting soft shadows on the sill. Potted plants stand blurred in the "
        "background. The camera holds a close, eye-level shot with a shallow depth of field.",
    ),
    (
        "city at night, rain",
        "A busy city street at night in heavy rain. People with umbrellas hurry along the "
        "wet pavement while cars pass slowly, their headlights streaking across puddles. "
        "Neon signs in red and blue reflect on the glistening road. Raindrops fall through "
        "the light of the street lamps. The camera tracks sideways at street level, "
        "following a woman in a yellow raincoat as she crosses.",
    ),
)

IMAGE_TO_VIDEO_EXAMPLES: tuple[tuple[str, str], ...] = (
    (
        "she turns around",
        "The woman slowly turns around to face the camera, her hair swinging with the "
        "movement, and a small smile appears on her face. The background stays as it is "
        "while the light shifts slightly across her shoulders. The camera holds steady, then "
        "eases in a little closer.",
    ),
    (
        "waves",
        "Waves roll in toward the shore and break into white foam, sliding up the sand and "
        "drawing back. Spray drifts in the wind and the water glitters as it moves. The "
        "camera stays still at the water's edge, gently rising and falling with a slight "
        "handheld sway.",
    ),
)

SHOTS_SYSTEM = f"""\
You turn a short story into the shots of a film made by a text-to-video model, where each
shot is about six seconds long. Split the story into between 1 and {MAX_SHOTS} shots in order.
For each shot write a detailed caption: ONE paragraph of at most {MAX_WORDS} words describing
the subject, the action, the setting, the lighting and the camera; repeat how recurring
characters and places look in every shot, because each shot is made separately. Say how each
shot starts: "continue" when it carries on from the end of the previous shot (same place,
same moment, the action goes on), "cut" for a new place, time or point of view. The first shot
is always "cut".
Answer with JSON only, exactly in this form, and nothing else:
{{"shots": [{{"prompt": "...", "start": "cut"}}, {{"prompt": "...", "start": "continue"}}]}}"""

SHOTS_EXAMPLE_STORY = "A small boat leaves the harbour at dawn and sails into a storm."
SHOTS_EXAMPLE_ANSWER = (
    '{"shots": [{"prompt": "A small red fishing boat leaves a quiet stone harbour at dawn. '
    "Soft pink light spreads over calm water and the boat's wake ripples behind it. The "
    'camera watches from the pier in a wide shot.", "start": "cut"}, {"prompt": "The small '
    "red fishing boat sails out past the harbour wall as the sky darkens and the wind "
    "picks up, whitecaps forming around it. The camera follows from behind at water "
    'level.", "start": "continue"}, {"prompt": "The small red fishing boat rides huge '
    "grey waves in a violent storm at sea, rain lashing the deck and lightning flashing "
    'in the clouds. A wide aerial shot circles the boat.", "start": "cut"}]}'
)

# Said to the model when its first answer was not the JSON asked for (one retry).
SHOTS_RETRY = (
    "That answer was not valid: {problem}. Answer again with the JSON object only, in the "
    'form {{"shots": [{{"prompt": "...", "start": "cut"}}]}}.'
)
