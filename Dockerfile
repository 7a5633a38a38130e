FROM python:3.11-slim

# The embedded PostgreSQL refuses to run as root; it runs as this user inside the image.
RUN useradd --create-home --uid 10001 lectr
WORKDIR /app
COPY pyproject.toml setup.cfg README.md ./
COPY lectr ./lectr
RUN pip install --no-cache-dir . && chown -R lectr /app
USER lectr

ENV LECTR_HOST=0.0.0.0 \
    LECTR_DATA_DIR=/home/lectr/data
VOLUME ["/home/lectr/data"]
EXPOSE 8080 8081
CMD ["lectr", "serve"]
