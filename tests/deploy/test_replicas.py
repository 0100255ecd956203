"""Two real replicas behind nginx on loopback, configured from deploy/nginx.conf.template."""

import os
import shutil
import signal
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from string import Template

import httpx
import pytest

from tests.support.server import free_port, wait_ready
from tests.support.service import image_bytes

ROOT = Path(__file__).resolve().parents[2]
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

pytestmark = pytest.mark.slow


def render_nginx(tmp: Path, upstreams: list[int], listen: int, max_body: int) -> Path:
    snippet = Template((ROOT / "deploy/nginx.conf.template").read_text()).safe_substitute(
        UPSTREAM_SERVERS=" ".join(f"server 127.0.0.1:{p};" for p in upstreams),
        LISTEN=f"127.0.0.1:{listen}", MAX_BODY=str(max_body))
    (tmp / "deconvseg.conf").write_text(snippet)
    conf = tmp / "nginx.conf"
    conf.write_text(f"""
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    include {tmp}/deconvseg.conf;
}}
""")
    return conf



def declare_oversized_body(port: int, length: int) -> tuple[str, str]:
    """Send only the headers of an oversized upload; return the status line and body."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"POST /segment HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n"
                     f"Content-Type: multipart/form-data; boundary=x\r\n\r\n".encode())
        data = b""
        while b"}" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    head, _, body = data.decode(errors="replace").partition("\r\n\r\n")
    return head.splitlines()[0], body


def served_count(url: str) -> float:
    text = httpx.get(url + "/metrics", timeout=10).text
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith('deconvseg_requests_total{route="/segment",status="200"}'))


def test_nginx_spreads_load_over_replicas_and_survives_losing_one(tiny_checkpoint, tmp_path):
    assert Path(NGINX).exists(), "nginx is required: apt-get install nginx-light (.ci/run does)"
    ports = [free_port(), free_port()]
    replicas = []
    env = {**os.environ, "DECONVSEG_CHECKPOINT": str(tiny_checkpoint), "DECONVSEG_THREADS": "1",
           "DECONVSEG_DEVICE": "cpu", "DECONVSEG_LOG_LEVEL": "warning"}
    for port in ports:
        replicas.append(subprocess.Popen([sys.executable, "-m", "app"],
                                         env={**env, "DECONVSEG_PORT": str(port)}))
    listen = free_port()
    nginx = subprocess.Popen([NGINX, "-c", str(render_nginx(tmp_path, ports, listen, 20971520)),
                              "-p", str(tmp_path)])
    front = f"http://127.0.0.1:{listen}"
    image = image_bytes(64, 64)

    def segment(_):
        return httpx.post(front + "/segment?format=png", timeout=60,
                          files={"file": ("x.png", image, "image/png")}).status_code

    try:
        for port, proc in zip(ports, replicas, strict=True):
            assert wait_ready(proc, f"http://127.0.0.1:{port}", 90), f"replica {port} not ready"
        assert wait_ready(nginx, front, 90, path="/healthz"), "nginx not ready"
        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(segment, range(40)))
        assert statuses == [200] * 40
        per_replica = [served_count(f"http://127.0.0.1:{p}") for p in ports]
        assert sum(per_replica) == 40 and min(per_replica) > 0, per_replica

        replicas[0].send_signal(signal.SIGTERM)
        replicas[0].wait(timeout=60)
        with ThreadPoolExecutor(4) as pool:
            after = list(pool.map(segment, range(12)))
        assert after == [200] * 12

        status_line, body = declare_oversized_body(listen, 30_000_000)
        assert " 413 " in status_line and '"payload_too_large"' in body
    finally:
        nginx.terminate()
        for proc in replicas:
            if proc.poll() is None:
                proc.terminate()
        for proc in [nginx, *replicas]:
            proc.wait(timeout=60)
