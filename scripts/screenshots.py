"""Screenshots of what a finished project shows its users, as PNGs under results/screenshots/:
MLflow's runs (table, and charts of score and cost), the pipeline's run, one training run, and a
table in the Snakemake report.

Starts `mlflow ui` on the project's store (lorarepro.core.tracking.mlflow_client: MLFLOW_TRACKING_URI or
the config's, default sqlite:///mlflow.db) on a free local port, and photographs it with headless
Chromium (`apt-get install -y chromium`). Makes results/report.html first if it is missing.

Run in the project directory, after `snakemake --cores 2`:
    python scripts/screenshots.py
    python scripts/screenshots.py --configfile workflow/configs/paper.yaml --out /tmp/shots
"""

import argparse
import base64
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from lorarepro.core import paths, tracking
from lorarepro.core.config import read_yaml

REPORT = Path("results/report.html")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configfile", action="append", default=[],
                        help="the --configfile(s) the pipeline ran with (their mlflow section; the report)")
    parser.add_argument("--out", type=Path, default=Path("results/screenshots"), help="where the PNGs go")
    parser.add_argument("--size", default="1600,1000", help="browser window, width,height")
    parser.add_argument("--wait", type=int, default=10, help="seconds each page gets to render")
    parser.add_argument("--report-click", action="append", default=None,
                        help="link text or CSS selector to click in the report before its screenshot "
                             "(repeatable; default: its first table, then that table's HTML view)")
    args = parser.parse_args(argv)
    args.report_click = args.report_click if args.report_click is not None else ["Table", "Table", TABLE_HTML]
    return args


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def mlflow_ui(uri: str, log: Path):
    """`mlflow ui` on `uri`, until the block ends; yields its base URL."""
    port = free_port()
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", "127.0.0.1", "--port", str(port)]
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        server = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):  # the first start migrates nothing, but imports take a while
            with contextlib.suppress(OSError):
                urllib.request.urlopen(f"{url}/health", timeout=2)
                break
            if server.poll() is not None:
                raise RuntimeError(f"mlflow ui exited ({server.returncode}); see {log}")
            time.sleep(1)
        else:
            raise TimeoutError(f"mlflow ui did not answer on {url}; see {log}")
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return name
    raise FileNotFoundError("no Chromium: apt-get install -y chromium")


class Browser:
    """Headless Chromium driven over the DevTools protocol on a pipe (no extra package): a page can be
    clicked before it is photographed, e.g. to close the assistant MLflow opens on a first visit."""

    def __init__(self, size: str):
        width, height = (int(v) for v in size.split(","))
        commands, self._commands = os.pipe()
        self._replies, replies = os.pipe()

        def as_fds_3_and_4():  # where --remote-debugging-pipe reads commands and writes replies
            os.dup2(os.dup(commands), 3)
            os.dup2(os.dup(replies), 4)

        cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--window-size={size}",
               "--remote-debugging-pipe", "about:blank"]
        self.process = subprocess.Popen(cmd, preexec_fn=as_fds_3_and_4, close_fds=False,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(commands)
        os.close(replies)
        self._id, self._buffer, self._session = 0, b"", None
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self._session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)

    def call(self, method: str, **params) -> dict:
        self._id += 1
        message = {"id": self._id, "method": method, "params": params}
        if self._session:
            message["sessionId"] = self._session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        while True:  # replies and events, each ended by a NUL byte; only this call's reply matters
            while b"\0" not in self._buffer:
                chunk = os.read(self._replies, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"chromium exited during {method}")
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def js(self, expression: str):
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True).get("result", {}).get("value")

    def shoot(self, url: str, png: Path, wait: int, *actions: str) -> Path:
        """`url` as a PNG, after `wait` seconds to render and each action (ACT) in turn."""
        self.call("Page.navigate", url=url)
        time.sleep(wait)
        for action in actions:
            self.js(f"({ACT})({json.dumps(action)})")
            time.sleep(max(2, wait // 3))
        png.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))
        return png

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


# One action on a page: `selector<-text` types text into an input (through the value setter React
# listens to); otherwise a click on the first element matching a CSS selector, else on the first
# link or button whose text is the argument, else whose text starts with it.
ACT = """s => { const [sel, text] = s.split('<-');
  if (text !== undefined) { const i = document.querySelector(sel); if (!i) return false;
    Object.getOwnPropertyDescriptor(HTMLInputElement.prototype, 'value').set.call(i, text);
    i.dispatchEvent(new Event('input', {bubbles: true})); return true; }
  let e = null; try { e = document.querySelector(s); } catch (x) {}
  const links = Array.from(document.querySelectorAll('a, button'));
  e = e || links.find(x => x.textContent.trim() === s) || links.find(x => x.textContent.trim().startsWith(s));
  if (e) e.click(); return !!e; }"""
CLOSE_ASSISTANT = "button[aria-label=Close]"
EXPAND_PARENT = "button[data-component-id*=runnamecellrenderer]"
# the charts of Table 6's comparison: score and cost of each training run
CHART_SEARCH = "input[placeholder='Search metric charts']<-^(test_|seconds_per_step|step_peak_mb|trainable_params)"
TABLE_HTML = "tr:nth-child(2) a[iconname=eye]"  # the report's view of the table's 2nd format, HTML


def pages(config: dict) -> tuple[str, dict[str, tuple]]:
    """The store's URI and {name: (UI route, actions)}: the experiment's runs as a table and as charts
    (its latest pipeline run expanded), that pipeline run, and one of its training runs. The
    workflow type selects the UI's model-training views (its GenAI ones are the default)."""
    client, name = tracking.mlflow_client(config)
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        raise SystemExit(f"no experiment {name!r} in {client.tracking_uri}: run the pipeline first")
    runs = f"#/experiments/{experiment.experiment_id}/runs"
    ml = "workflowType=machine_learning"
    routes = {"mlflow_runs": (f"{runs}?{ml}", CLOSE_ASSISTANT, EXPAND_PARENT),
              "mlflow_charts": (f"{runs}?{ml}&compareRunsMode=CHART", CLOSE_ASSISTANT, EXPAND_PARENT, CHART_SEARCH)}
    parents = client.search_runs([experiment.experiment_id], "tags.`lorarepro.kind` = 'pipeline'",
                                 order_by=["attributes.start_time DESC"], max_results=1)
    if parents:
        parent = parents[0].info.run_id
        routes["mlflow_pipeline_run"] = (f"{runs}/{parent}?{ml}", CLOSE_ASSISTANT)
        children = client.search_runs([experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{parent}'",
                                      max_results=1)
        if children:
            routes["mlflow_training_run"] = (f"{runs}/{children[0].info.run_id}?{ml}", CLOSE_ASSISTANT)
    return client.tracking_uri, routes


def make_report(configfiles: list[str]) -> None:
    """`snakemake --report` (a separate call: the pipeline itself never writes it)."""
    extra = [arg for f in configfiles for arg in ("--configfile", f)]
    subprocess.run([sys.executable, "-m", "snakemake", "--cores", "1", *extra, "--report", str(REPORT)], check=True)


def main(argv=None) -> None:
    args = parse_args(argv)
    config = read_yaml("params.yaml") if Path("params.yaml").is_file() else {}
    for f in args.configfile:  # only the mlflow section matters here: a shallow update is enough
        config.update({k: v for k, v in read_yaml(f).items() if k == "mlflow"})
    args.out.mkdir(parents=True, exist_ok=True)
    uri, routes = pages(config)
    if not REPORT.is_file():
        make_report(args.configfile)
    with mlflow_ui(uri, paths.log("screenshots", "mlflow_ui")) as url:
        for name, (route, *actions) in routes.items():
            print(shoot(f"{url}/{route}", args.out / f"{name}.png", args, *actions))
    print(shoot(REPORT.resolve().as_uri(), args.out / "report.png", args, *args.report_click))


def shoot(url: str, png: Path, args, *actions: str) -> Path:
    """A fresh browser per page: MLflow keeps UI state (an expanded run) in the browser, and a click
    meant to expand would collapse what the page before expanded."""
    browser = Browser(args.size)
    try:
        return browser.shoot(url, png, args.wait, *actions)
    finally:
        browser.close()


if __name__ == "__main__":
    main()
