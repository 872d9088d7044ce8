# shoal: one image for every role (scheduler, worker, client).
#
#   docker build -t shoal:0.1.0 .
#   docker run --rm shoal:0.1.0 --version
#
# The entrypoint is the `shoal` command: `docker run ... shoal:0.1.0 scheduler`,
# `... worker tcp://HOST:8786`. See README.md, "Run on many machines".
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# shoal with its extras (dask collections: arrays, dataframes, bags), installed from
# this checkout, pure Python (SHOAL_COMPILE=1 would need a C compiler, which the slim
# image lacks); the sources are not kept in the image.
COPY pyproject.toml README.md setup.py /tmp/shoal-src/
COPY buildtools /tmp/shoal-src/buildtools
COPY shoal /tmp/shoal-src/shoal
RUN pip install "/tmp/shoal-src[dask]" \
    && rm -rf /tmp/shoal-src

# A fixed, non-root user (uid 1000): Kubernetes' runAsNonRoot can check it.
RUN useradd --create-home --uid 1000 --user-group --shell /usr/sbin/nologin shoal
USER 1000:1000
WORKDIR /home/shoal

# 8786: the scheduler's comm port; 8787: its dashboard (/health, /metrics);
# 8788/8789: a worker's and its nanny's ports when fixed with --worker-port/--nanny-port.
EXPOSE 8786 8787 8788 8789

ENTRYPOINT ["shoal"]
CMD ["--help"]
