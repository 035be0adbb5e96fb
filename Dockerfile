# CUDA-capable image for wsi-prognosis. The torch wheels bring their own CUDA runtime libraries;
# the host's NVIDIA driver comes in through the NVIDIA Container Toolkit (`docker run --gpus all`).
#
# Build:  docker build -t wsi-prognosis .
# Score a mounted folder of slides with a bundle on all GPUs:
#   docker run --rm --gpus all --shm-size 8g \
#     -v /data/slides:/slides:ro -v /data/bundle:/bundle:ro -v /data/out:/out \
#     wsi-prognosis score bundle=/bundle manifest=/slides out=/out
# Review a scored batch in the browser (http://127.0.0.1:8765/ on the host). Inside the container the
# server must listen on every interface (host=0.0.0.0, it warns); publish the port on the host's
# localhost only, and mount the slides at the paths they were scored from (or pass manifest=):
#   docker run --rm -p 127.0.0.1:8765:8765 -v /data:/data:ro \
#     wsi-prognosis review scores=/data/out host=0.0.0.0
FROM python:3.11-slim-bookworm

ENV PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN apt-get update && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/wsi-prognosis
COPY pyproject.toml README.md constraints.txt ./
COPY wsi_prognosis ./wsi_prognosis
# Same order and pins as the Makefile: torch first, then the package with its pyproject dependencies,
# both held to the tested versions in constraints.txt.
RUN pip install -c constraints.txt torch==2.14.1 torchvision==0.29.1 \
    && pip install -c constraints.txt .

WORKDIR /work
EXPOSE 8765
ENTRYPOINT ["wsi-prognosis"]
CMD ["--help"]
