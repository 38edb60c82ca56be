# Manifold's container image: the wheel, installed into a venv on a slim Python, run as a non-root user.
#
#   docker build -t manifold .
#   docker run --rm -p 127.0.0.1:8470:8470 -v manifold-config:/etc/manifold -v manifold-state:/var/lib/manifold manifold
#
# The build stages are the steps the packaging test runs (tests/packaging/test_wheel.py, in `make test`;
# test_container.py holds this file to them): `python -m build --no-isolation` with the pinned build tools,
# then `pip install <wheel> -c constraints.txt` into a fresh venv, then `manifold init`.
# compose.yaml runs two replicas of this image on PostgreSQL behind haproxy.

FROM python:3.11-slim AS builder
WORKDIR /build
COPY constraints.txt ./
# The build tools pinned in the project's test extra (pyproject.toml), the ones the packaging test builds with.
RUN python -m pip install --no-cache-dir --disable-pip-version-check build==1.6.1 setuptools==80.9.0 -c constraints.txt
COPY pyproject.toml README.md ./
COPY src ./src
# The sdist, then the wheel built from it.
RUN python -m build --no-isolation --outdir /dist .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/manifold/bin:$PATH
COPY --from=builder /build/constraints.txt /tmp/constraints.txt
COPY --from=builder /dist/ /tmp/dist/
RUN python -m venv /opt/manifold \
    && /opt/manifold/bin/pip install --no-cache-dir --disable-pip-version-check /tmp/dist/mcp_manifold-*.whl -c /tmp/constraints.txt \
    && rm -rf /tmp/dist /tmp/constraints.txt
# The starter configuration (`manifold init`: the demo notebook as its one upstream), state in its own place.
# A volume mounted on /etc/manifold that is empty starts with these files; mount your own config instead.
RUN manifold init /etc/manifold --state-dir /var/lib/manifold \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/manifold --shell /usr/sbin/nologin manifold \
    && mkdir -p /var/lib/manifold \
    && chown manifold:manifold /var/lib/manifold \
    && chmod 0700 /var/lib/manifold
USER manifold
WORKDIR /var/lib/manifold
VOLUME ["/etc/manifold", "/var/lib/manifold"]
EXPOSE 8470
# /readyz: 200 once the gateway serves and its required upstreams answer. No curl in the slim image: Python's
# urllib. Keep the port in step with gateway.port.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request\ntry:\n    sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8470/readyz', timeout=4).status == 200 else 1)\nexcept OSError:\n    sys.exit(1)"]
ENTRYPOINT ["manifold", "--config", "/etc/manifold/manifold.yaml"]
# Inside a container the gateway must listen on 0.0.0.0: the container's own loopback cannot be reached from
# outside it, and the published port is the boundary (publish it on 127.0.0.1, or put a proxy in front).
# This is the one place Manifold binds beyond loopback; `manifold serve` refuses it when authentication is off.
CMD ["serve", "--host", "0.0.0.0"]
