# One image for every Herald process; the command picks the service: `serve ingest`, `migrate`, …
# Build: docker build -t herald:dev .

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/herald
# Dependencies first, in their own layer: it is rebuilt only when pyproject.toml changes.
COPY pyproject.toml ./
RUN python -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; open('requirements.txt', 'w').write('\n'.join(deps))" \
 && /opt/herald/bin/pip install --requirement requirements.txt
COPY README.md ./
COPY kernel ./kernel
COPY gateway ./gateway
COPY services ./services
COPY herald ./herald
RUN /opt/herald/bin/pip install --no-deps . \
 && /opt/herald/bin/python -m compileall -q /opt/herald/lib

FROM ${PYTHON_IMAGE}
ARG HERALD_UID=10001
RUN useradd --uid "${HERALD_UID}" --user-group --no-create-home --home-dir /tmp --shell /usr/sbin/nologin herald
COPY --from=build /opt/herald /opt/herald
# Nothing is written to the image at run time: bytecode is compiled at build time, /tmp is a volume.
ENV PATH=/opt/herald/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    HERALD_HOST=0.0.0.0 \
    HERALD_LOG_FORMAT=json
USER ${HERALD_UID}
WORKDIR /tmp
EXPOSE 8000 8001 8002 8003 8004 8005
ENTRYPOINT ["herald"]
CMD ["serve", "gateway"]
