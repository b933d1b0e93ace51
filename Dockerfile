# The realtime service image: `manage.py serve` on port 8000 (see docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
# The lock: the exact versions (hash-checked) that CI tested; requirements.txt holds the ranges.
COPY requirements.lock .
RUN pip install --no-cache-dir -r requirements.lock
COPY . .
# Debug mode for this one command: collecting files needs no signing key.
RUN DJANGO_DEBUG=1 python manage.py collectstatic --noinput

EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status != 200)"
CMD ["python", "manage.py", "serve", "--host", "0.0.0.0", "--port", "8000"]
