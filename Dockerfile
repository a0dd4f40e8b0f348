# vla-demo: the browser app in a container.
#
#   docker build -t vla-demo .
#   docker build -t vla-demo --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu .  # small CPU-only torch
#   docker run -p 7860:7860 -e VLA_DEMO_AUTH=user:password -v vla-data:/data vla-demo
#
# The app listens on 0.0.0.0 inside the container, so it refuses to start unless VLA_DEMO_AUTH
# (user:password, or the path of a file holding it, e.g. a Docker secret) is set, or --insecure is
# appended to `docker run ... vla-demo`. Datasets, policy versions and job runs live in /data.

ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

# Where torch comes from: PyPI by default (works everywhere; on x86_64 that is the large CUDA
# build with its NVIDIA libraries), or e.g. https://download.pytorch.org/whl/cpu for a CPU-only image
# that is several GB smaller.
ARG TORCH_INDEX_URL=https://pypi.org/simple

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GRADIO_ANALYTICS_ENABLED=False \
    HF_HUB_OFFLINE=1 \
    VLA_DEMO_DATA=/data

WORKDIR /app

# Dependencies first (a layer that survives code changes). torch alone from TORCH_INDEX_URL, at the
# version requirements.txt pins (its own dependencies then come from PyPI under constraints.txt).
COPY requirements.txt constraints.txt ./
RUN TORCH_PIN="$(grep -E '^torch==' requirements.txt | cut -d' ' -f1)" \
    && test -n "$TORCH_PIN" \
    && pip install --no-deps --index-url "$TORCH_INDEX_URL" "$TORCH_PIN" \
    && pip install -r requirements.txt -c constraints.txt

COPY app.py ./
COPY vla_demo ./vla_demo
COPY assets ./assets

# An unprivileged user owning only the data root (the code stays read-only to it).
RUN useradd --create-home --uid 10001 --user-group vla \
    && mkdir -p /data \
    && chown vla:vla /data
USER vla
VOLUME ["/data"]

EXPOSE 7860

# /health answers without auth: 200 {"status": "ok", ...} while the data root is writable.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:7860/health', timeout=4).status == 200 else 1)"]

# Extra flags go after the image name: docker run ... vla-demo --policy /data/policies/v3
ENTRYPOINT ["python", "app.py", "--host", "0.0.0.0", "--data-root", "/data"]
CMD []
