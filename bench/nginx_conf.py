"""Writes a runnable nginx configuration around the shipped contrib/nginx.conf,
the way tests/api/proxy.rs does: the example's placeholder addresses replaced
by this run's ports, a main nginx.conf with `daemon off` and every path in a
temp dir, and a static upstream answering a fixed 200.

    python3 bench/nginx_conf.py SITE DIR KAGGLEINGEST_ADDR API_ADDR LISTEN_ADDR auth|noauth

`noauth` is the same site with its `auth_request` lines removed, so the two
variants differ by exactly the subrequest to /api/auth/verify. The site file
is read as it is now; a missing placeholder, or no `auth_request` line to
remove, is an error: the benchmark must not silently measure something else.
"""

import re
import sys
from pathlib import Path

# The example's placeholder addresses (also in tests/api/proxy.rs).
PLACEHOLDERS = {"kaggleingest": "127.0.0.1:8000", "api": "127.0.0.1:9000", "listen": "127.0.0.1:8080"}
# `auth_request URI;` and `auth_request off;`, not `auth_request_set`, whose
# variables the rest of the site still names (they stay empty without it).
AUTH_REQUEST = re.compile(r"^[ \t]*auth_request[ \t]+[^;]*;[ \t]*(#.*)?\n", re.MULTILINE)
# What the static upstream answers: a small JSON body, as an API would.
UPSTREAM_BODY = '{"data":"bench upstream","items":[1,2,3]}'


def main():
    if len(sys.argv) != 7 or sys.argv[6] not in ("auth", "noauth"):
        sys.exit(__doc__)
    site_path, out = Path(sys.argv[1]), Path(sys.argv[2])
    addrs = dict(zip(("kaggleingest", "api", "listen"), sys.argv[3:6]))
    site = site_path.read_text()
    for name, placeholder in PLACEHOLDERS.items():
        if placeholder not in site:
            sys.exit(f"nginx_conf.py: {site_path} no longer mentions {placeholder} ({name}); "
                     "update PLACEHOLDERS here and in tests/api/proxy.rs")
        site = site.replace(placeholder, addrs[name])
    if sys.argv[6] == "noauth":
        site, removed = AUTH_REQUEST.subn("", site)
        if removed == 0:
            sys.exit(f"nginx_conf.py: no auth_request line in {site_path} to remove")

    d = out.resolve()
    (d / "site.conf").write_text(site)
    (d / "nginx.conf").write_text(f"""daemon off;
worker_processes auto;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{
    worker_connections 4096;
}}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    include {d}/site.conf;
    server {{
        listen {addrs["api"]};
        location / {{
            default_type application/json;
            return 200 '{UPSTREAM_BODY}';
        }}
    }}
}}
""")


if __name__ == "__main__":
    main()
