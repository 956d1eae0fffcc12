# Allegro Studio on an NVIDIA GPU.
#
#   docker build -t allegro-studio .
#   docker run --gpus all -p 7860:7860 -v allegro-hf:/data/hf -v allegro-videos:/data/outputs \
#       allegro-studio
#
# The Allegro weights (~25 GB) download into the /data/hf volume on the first start, once.
#
# PyPI's torch==2.13.0 (x86_64) is built for CUDA 13.0 and brings its own CUDA libraries, so
# the base image only has to match it: its NVIDIA_REQUIRE_CUDA=cuda>=13.0 makes the NVIDIA
# Container Toolkit refuse to start on a host whose driver is older than 580, instead of a
# container that silently runs the CPU preview model. GPUs: Turing or newer.
FROM nvidia/cuda:13.0.0-base-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# Python 3.12 from Ubuntu, in a virtual environment (Ubuntu's own Python is externally
# managed); curl for the health check. PyAV and OpenCV wheels bring their own FFmpeg.
# gcc, libc6-dev and the Python headers: --compile's Triton builds its kernel launcher with
# the system C compiler (triton/runtime/build.py: CC, else gcc or clang, else it fails).
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-dev gcc \
        libc6-dev curl ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv "$VIRTUAL_ENV"

WORKDIR /app
# Dependencies first, so code changes do not reinstall them. On Linux x86_64, PyPI's
# torch==2.13.0 is the CUDA build (it carries its own CUDA libraries; the host needs only
# the NVIDIA driver).
COPY requirements.txt .
RUN pip install -r requirements.txt

COPY app.py ./
COPY allegro ./allegro
COPY ui ./ui
COPY assets ./assets

# A non-root user with uid 1000 (the image's default "ubuntu" user has that uid: replaced),
# owning the two volumes: the Hugging Face cache (weights) and the videos.
RUN userdel --remove ubuntu 2>/dev/null || true \
    && useradd --create-home --uid 1000 studio \
    && mkdir -p /data/hf /data/outputs \
    && chown -R studio:studio /data
USER studio

ENV HF_HOME=/data/hf \
    ALLEGRO_OUTPUT_DIR=/data/outputs \
    GRADIO_SERVER_PORT=7860 \
    GRADIO_ANALYTICS_ENABLED=False \
    TOKENIZERS_PARALLELISM=false
VOLUME ["/data/hf", "/data/outputs"]
EXPOSE 7860

# The page answers within seconds of the start; the model loads (and downloads) behind it.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD curl --fail --silent --show-error --output /dev/null http://127.0.0.1:7860/ || exit 1

CMD ["python", "app.py", "--host", "0.0.0.0"]
