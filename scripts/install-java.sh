#!/usr/bin/env bash
# Java 17+ and Maven for the local Kafka (its jars come from Maven Central once). Does
# nothing when both are on PATH and Java is 17 or newer. Otherwise, as root on a
# Debian/Ubuntu machine, installs them with apt-get (default-jre-headless is Java 17+
# there); elsewhere it says what to install and exits 1.
set -euo pipefail
java_major() {
  java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n 1
}
if command -v java >/dev/null && command -v mvn >/dev/null && [ "$(java_major)" -ge 17 ] 2>/dev/null; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
  echo "switchyard: Java 17+ and Maven are needed for the local Kafka: install them (e.g. apt-get install default-jre-headless maven)" >&2
  exit 1
fi
echo "switchyard: installing Java and Maven with apt-get (once)" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends default-jre-headless maven >/dev/null
java -version 2>&1 | head -n 1 >&2
