# strainwatch: one image for every service (processor, alerting, gateway, the topics job).
#   docker build -t strainwatch .
#   docker run --rm strainwatch strainwatch --help
# deploy/compose.yaml builds it and picks the service with `command:`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Pango and a font: the monthly report renders its PDF with WeasyPrint
RUN apt-get update \
    && apt-get install -y --no-install-recommends libpango-1.0-0 libpangoft2-1.0-0 fonts-dejavu-core \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
# exactly the tested dependency versions (the processor relies on faust internals), in their own
# layer so that a code change does not reinstall them; then the package alone, without resolving
COPY requirements.lock ./
RUN pip install -r requirements.lock
COPY pyproject.toml README.md ./
COPY services ./services
RUN pip install --no-deps . \
    && rm -rf /src/build /src/services/*.egg-info

# an unprivileged user; faust keeps its data directory in the working directory
RUN useradd --system --uid 10001 --home-dir /var/lib/strainwatch --create-home strainwatch
USER strainwatch
WORKDIR /var/lib/strainwatch
ENV STRAINWATCH_STATE_DIR=/var/lib/strainwatch \
    STRAINWATCH_LOG_FORMAT=json

# the console script of pyproject.toml ([project.scripts] strainwatch)
CMD ["strainwatch", "--help"]
