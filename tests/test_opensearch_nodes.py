"""docker/opensearch-node.sh and the compose files: one version by default everywhere, and the Java it needs."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

DOCKER = Path(__file__).resolve().parents[1] / "docker"


def default_version(path: Path) -> set[str]:
    return set(re.findall(r"\$\{OPENSEARCH_VERSION:-([0-9.]+)\}", path.read_text()))


def test_the_node_script_and_both_compose_files_default_to_one_version():
    versions = [default_version(DOCKER / name)
                for name in ("opensearch-node.sh", "docker-compose.yml", "docker-compose.cluster.yml")]
    assert versions[0] == {"3.6.0"} and all(found == versions[0] for found in versions)


def node_script(tmp_path: Path, version: str, java_home: str) -> subprocess.CompletedProcess[str]:
    """``status`` on a port where nothing runs, with ``java_home`` as JAVA_HOME and nothing under the JVM
    root but a Java 17 (the version is checked before anything is fetched or started)."""
    jvms = tmp_path / "jvm"
    (jvms / "java-17").mkdir(parents=True)
    (jvms / "java-17" / "release").write_text('JAVA_VERSION="17.0.15"\n')
    env = {key: value for key, value in os.environ.items() if key != "OPENSEARCH_JAVA_HOME"}
    env.update(OPENSEARCH_VERSION=version, OPENSEARCH_PORT="9399", OPENSEARCH_JVM_ROOT=str(jvms),
               JAVA_HOME=java_home, HYBRID_CACHE=str(tmp_path / "cache"))
    return subprocess.run(["bash", str(DOCKER / "opensearch-node.sh"), "status"], env=env, capture_output=True,
                          text=True, timeout=60)


def test_opensearch_3_without_java_21_is_told_so_in_one_line(tmp_path):
    result = node_script(tmp_path, "3.6.0", str(tmp_path / "jvm" / "java-17"))
    assert result.returncode == 1
    assert result.stderr.strip() == ("OpenSearch 3.6.0 needs Java 21 or newer, and none is installed (set "
                                     "OPENSEARCH_JAVA_HOME to one, or OPENSEARCH_VERSION=2.19.1 for Java 17)")


def test_opensearch_2_runs_on_java_17(tmp_path):
    result = node_script(tmp_path, "2.19.1", str(tmp_path / "jvm" / "java-17"))
    assert "Java 21" not in result.stderr
    assert "OpenSearch node 1 is not running" in result.stdout
