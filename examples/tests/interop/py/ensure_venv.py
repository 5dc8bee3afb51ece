"""Creates (once) the virtualenv the interop tests run dispatcherd in.

Usage: python3 ensure_venv.py VENV_DIR REQUIREMENTS_FILE

Idempotent and safe to run from several processes at once: an exclusive lock on VENV_DIR.lock
serialises them, and a marker file inside the venv records the requirements it was made from, so
a venv made from other (older) pins is made anew. Prints the venv's python on the last line of
stdout. Uses only the standard library: it runs on the system python3, before any venv exists.
"""

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import venv

MARKER = '.dispatcherd-interop-ready'


def fail(msg: str) -> None:
    print(f'ensure_venv: {msg}', file=sys.stderr)
    sys.exit(1)


def main() -> None:
    if len(sys.argv) != 3:
        fail('usage: ensure_venv.py VENV_DIR REQUIREMENTS_FILE')
    venv_dir = os.path.abspath(sys.argv[1])
    req_file = os.path.abspath(sys.argv[2])
    if sys.version_info < (3, 11):
        fail(f'dispatcherd needs Python >= 3.11, this is {sys.version.split()[0]} ({sys.executable})')
    with open(req_file, 'rb') as f:
        requirements = f.read()
    stamp = hashlib.sha256(requirements + sys.version.encode()).hexdigest()
    python = os.path.join(venv_dir, 'bin', 'python')
    marker = os.path.join(venv_dir, MARKER)

    os.makedirs(os.path.dirname(venv_dir), exist_ok=True)
    with open(venv_dir + '.lock', 'w') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            with open(marker) as f:
                if f.read().strip() == stamp and os.path.exists(python):
                    print(python)
                    return
        except FileNotFoundError:
            pass
        if os.path.exists(venv_dir):
            shutil.rmtree(venv_dir)
        print(f'ensure_venv: creating {venv_dir} with {sys.executable}', file=sys.stderr)
        try:
            venv.EnvBuilder(with_pip=True, clear=True).create(venv_dir)
        except Exception as e:  # e.g. Debian without python3-venv: no ensurepip
            fail(f'could not create a virtualenv with {sys.executable}: {e}; install the venv module '
                 '(Debian/Ubuntu: apt-get install python3-venv)')
        cmd = [python, '-m', 'pip', 'install', '--disable-pip-version-check', '--no-input', '-r', req_file]
        print('ensure_venv: ' + ' '.join(cmd), file=sys.stderr)
        done = subprocess.run(cmd, stdout=sys.stderr, stderr=sys.stderr)
        if done.returncode != 0:
            fail(f'pip install failed (exit {done.returncode}); the tests need network access to PyPI '
                 f'for: {requirements.decode().strip()}')
        check = subprocess.run([python, '-c', 'import dispatcherd, psycopg; print(psycopg.pq.version())'],
                               stdout=sys.stderr, stderr=sys.stderr)
        if check.returncode != 0:
            fail('dispatcherd or psycopg does not import in the new venv')
        with open(marker, 'w') as f:
            f.write(stamp + '\n')
        print(python)


if __name__ == '__main__':
    main()
