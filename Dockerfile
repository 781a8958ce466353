FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
RUN apt-get update && apt-get install -y --no-install-recommends libpq5 && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 1000 tre
COPY requirements.txt .
RUN pip install -r requirements.txt
COPY . .
RUN mkdir -p /data/store && chown -R tre /data /app
USER tre
EXPOSE 8000
CMD ["gunicorn", "tre.wsgi:application", "--bind", "0.0.0.0:8000", "--workers", "3", "--timeout", "60"]
