{{/* Names, labels and the pieces every Switchyard container shares. */}}

{{- define "switchyard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "switchyard.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "switchyard.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "switchyard.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- /* A worker pool's ServiceAccount: its own with the Vault Agent injector, whose
       Kubernetes auth role per pool binds a ServiceAccount (shared, any pool could log in
       as any other pool and read its tenants' credentials); else the shared one. */}}
{{- define "switchyard.workerServiceAccountName" -}}
{{- $base := include "switchyard.serviceAccountName" .root -}}
{{- /* Only accounts the chart creates: a named existing one stays shared, as it was. */}}
{{- if and .root.Values.vault.agentInjector.enabled .root.Values.serviceAccount.create -}}
{{- printf "%s-worker-%s" $base .connector | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $base -}}
{{- end -}}
{{- end -}}

{{- /* The TCP port of a URL: its own, else its scheme's (443 for https, 80 for http). */}}
{{- define "switchyard.urlPort" -}}
{{- $url := urlParse . -}}
{{- /* After an IPv6 literal's brackets, or after the host name. */}}
{{- $port := regexFind ":[0-9]+$" (regexReplaceAll "^\\[[^\\]]*\\]" $url.host "") | trimPrefix ":" -}}
{{- if $port -}}
{{- $port -}}
{{- else if eq $url.scheme "http" -}}
80
{{- else -}}
443
{{- end -}}
{{- end -}}

{{- define "switchyard.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "switchyard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: switchyard
{{- end -}}

{{/* Selector labels of one component. Call with (dict "root" $ "component" "router"). */}}
{{- define "switchyard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "switchyard.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- if .connector }}
switchyard.io/connector: {{ .connector }}
{{- end }}
{{- end -}}

{{- define "switchyard.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The ingress's image: ingress.imageTag when set, so it can follow the others in an upgrade. */}}
{{- define "switchyard.ingressImage" -}}
{{- printf "%s:%s" .Values.image.repository (default (default .Chart.AppVersion .Values.image.tag) .Values.ingress.imageTag) -}}
{{- end -}}

{{/* Consumer group of a worker pool: the runtime uses "<prefix>workers.<connector>". */}}
{{- define "switchyard.workerGroup" -}}
{{- printf "%sworkers.%s" .root.Values.kafka.topics.prefix .connector -}}
{{- end -}}

{{/* schemas.RETRY_TIERS: tier i of a pool reads topic "<prefix>retry.<connector>.<RETRY_TIERS[i]>s"
whatever delay the pool gives that tier (a test keeps this list equal to the Python one). */}}
{{- define "switchyard.retryTierNames" -}}
[5, 30, 120]
{{- end -}}

{{/* KEDA's name for a SASL mechanism. */}}
{{- define "switchyard.kedaSasl" -}}
{{- $m := . | upper -}}
{{- if eq $m "PLAIN" -}}plaintext{{- else if eq $m "SCRAM-SHA-256" -}}scram_sha256{{- else if eq $m "SCRAM-SHA-512" -}}scram_sha512{{- else -}}{{- fail (printf "kafka.sasl.mechanism %q is not supported" .) -}}{{- end -}}
{{- end -}}

{{- define "switchyard.securityProtocol" -}}
{{- if and .Values.kafka.tls.enabled .Values.kafka.sasl.enabled -}}SASL_SSL
{{- else if .Values.kafka.tls.enabled -}}SSL
{{- else if .Values.kafka.sasl.enabled -}}SASL_PLAINTEXT
{{- else -}}PLAINTEXT
{{- end -}}
{{- end -}}

{{/* Cross-field checks that values.schema.json cannot express. */}}
{{- define "switchyard.validate" -}}
{{- $partitions := int .Values.kafka.topics.partitions -}}
{{- if gt (int .Values.router.replicas) $partitions -}}
{{- fail (printf "router.replicas (%d) must not exceed kafka.topics.partitions (%d): a Kafka consumer group gives each partition to one member, so extra routers sit idle" (int .Values.router.replicas) $partitions) -}}
{{- end -}}
{{- if and .Values.kafka.sasl.enabled (not .Values.kafka.sasl.existingSecret) -}}
{{- fail "kafka.sasl.enabled needs kafka.sasl.existingSecret (a Secret with the SASL username and password)" -}}
{{- end -}}
{{- if and .Values.ingress.autoscaling.enabled (gt (int .Values.ingress.autoscaling.minReplicas) (int .Values.ingress.autoscaling.maxReplicas)) -}}
{{- fail "ingress.autoscaling.minReplicas must not exceed ingress.autoscaling.maxReplicas" -}}
{{- end -}}
{{- $ingresses := ternary (int .Values.ingress.autoscaling.maxReplicas) (int .Values.ingress.replicas) .Values.ingress.autoscaling.enabled -}}
{{- if and (gt $ingresses 1) (not .Values.ingress.mcpSessionSecret.name) (not .Values.ingress.adminTokenSecret.name) -}}
{{- fail "ingress.mcpSessionSecret.name is needed with more than one ingress replica: every replica must sign MCP session ids with the same secret, or clients moved to another replica lose their session" -}}
{{- end -}}
{{- if eq (int .Values.ingress.port) (int .Values.metrics.port) -}}
{{- fail (printf "ingress.port and metrics.port are both %d: the ingress serves its API and its metrics on separate ports" (int .Values.ingress.port)) -}}
{{- end -}}
{{- /* Service names are DNS labels of at most 63 characters; the chart's suffixes come
       after the (already 63-bounded) full name, and the Prometheus jobs are named after them. */ -}}
{{- $services := list (printf "%s-ingress-metrics" (include "switchyard.fullname" .)) (printf "%s-router-metrics" (include "switchyard.fullname" .)) -}}
{{- range $connector := keys .Values.workers.pools -}}
{{- $services = append $services (printf "%s-worker-%s-metrics" (include "switchyard.fullname" $) $connector) -}}
{{- end -}}
{{- range $service := $services -}}
{{- if gt (len $service) 63 -}}
{{- fail (printf "the Service name %s is %d characters, over Kubernetes' 63: use a shorter release name or set fullnameOverride" $service (len $service)) -}}
{{- end -}}
{{- end -}}
{{- range $connector, $own := .Values.workers.pools -}}
{{- $pool := mergeOverwrite (deepCopy $.Values.workerDefaults) (default dict $own) -}}
{{- if gt (int $pool.replicas) (int $pool.maxReplicas) -}}
{{- fail (printf "workers.pools.%s: replicas (%d) must not exceed maxReplicas (%d)" $connector (int $pool.replicas) (int $pool.maxReplicas)) -}}
{{- end -}}
{{- if and $.Values.keda.enabled $pool.autoscaling (eq (int $pool.replicas) 0) (gt (int $pool.keda.activationLagThreshold) 0) -}}
{{- fail (printf "workers.pools.%s: with replicas 0, keda.activationLagThreshold must be 0: KEDA wakes a pool at zero only for more lag than that, so up to %d commands would wait for more traffic, past their deadlines" $connector (int $pool.keda.activationLagThreshold)) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The pool values of one connector: workerDefaults overlaid with the pool's own keys. */}}
{{- define "switchyard.pool" -}}
{{- $own := default dict (index .root.Values.workers.pools .connector) -}}
{{- toYaml (mergeOverwrite (deepCopy .root.Values.workerDefaults) $own) -}}
{{- end -}}

{{/* Environment shared by every Switchyard container (names from core/settings.py ENV_VARS). */}}
{{- define "switchyard.commonEnv" -}}
- name: SWITCHYARD_KAFKA_BOOTSTRAP
  value: {{ .Values.kafka.bootstrap | quote }}
- name: SWITCHYARD_KAFKA_SECURITY_PROTOCOL
  value: {{ include "switchyard.securityProtocol" . }}
{{- if .Values.kafka.sasl.enabled }}
- name: SWITCHYARD_KAFKA_SASL_MECHANISM
  value: {{ .Values.kafka.sasl.mechanism | quote }}
- name: SWITCHYARD_KAFKA_SASL_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ .Values.kafka.sasl.existingSecret }}
      key: {{ .Values.kafka.sasl.usernameKey }}
- name: SWITCHYARD_KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.kafka.sasl.existingSecret }}
      key: {{ .Values.kafka.sasl.passwordKey }}
{{- end }}
{{- if and .Values.kafka.tls.enabled .Values.kafka.tls.caSecret.name }}
- name: SWITCHYARD_KAFKA_CA_FILE
  value: /etc/switchyard/kafka-ca/{{ .Values.kafka.tls.caSecret.key }}
{{- end }}
- name: SWITCHYARD_TOPIC_PREFIX
  value: {{ .Values.kafka.topics.prefix | quote }}
- name: SWITCHYARD_TOPIC_PARTITIONS
  value: {{ .Values.kafka.topics.partitions | quote }}
- name: SWITCHYARD_REPLICATION_FACTOR
  value: {{ .Values.kafka.topics.replicationFactor | quote }}
- name: VAULT_ADDR
  value: {{ .Values.vault.address | quote }}
- name: SWITCHYARD_VAULT_KV_MOUNT
  value: {{ .Values.vault.kvMount | quote }}
{{- if .Values.vault.caSecret.name }}
- name: VAULT_CACERT
  value: /etc/switchyard/vault-ca/{{ .Values.vault.caSecret.key }}
{{- end }}
- name: SWITCHYARD_LOG_LEVEL
  value: {{ .Values.logLevel | quote }}
# The root filesystem is read-only: caches and local state go to the /tmp emptyDir.
- name: SWITCHYARD_HOME
  value: /tmp/switchyard
{{- if .Values.otlpEndpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ .Values.otlpEndpoint | quote }}
{{- end }}
{{- end -}}

{{- define "switchyard.metricsEnv" -}}
- name: SWITCHYARD_METRICS_PORT
  value: {{ .Values.metrics.port | quote }}
{{- end -}}

{{- define "switchyard.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
{{- if and .Values.kafka.tls.enabled .Values.kafka.tls.caSecret.name }}
- name: kafka-ca
  mountPath: /etc/switchyard/kafka-ca
  readOnly: true
{{- end }}
{{- if .Values.vault.caSecret.name }}
- name: vault-ca
  mountPath: /etc/switchyard/vault-ca
  readOnly: true
{{- end }}
{{- end -}}

{{- define "switchyard.volumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: 256Mi
{{- if and .Values.kafka.tls.enabled .Values.kafka.tls.caSecret.name }}
- name: kafka-ca
  secret:
    secretName: {{ .Values.kafka.tls.caSecret.name }}
    items:
      - key: {{ .Values.kafka.tls.caSecret.key }}
        path: {{ .Values.kafka.tls.caSecret.key }}
{{- end }}
{{- if .Values.vault.caSecret.name }}
- name: vault-ca
  secret:
    secretName: {{ .Values.vault.caSecret.name }}
    items:
      - key: {{ .Values.vault.caSecret.key }}
        path: {{ .Values.vault.caSecret.key }}
{{- end }}
{{- end -}}

{{/* Probes on the metrics port (router and workers): ready only when Kafka and Vault answer. */}}
{{- define "switchyard.metricsProbes" -}}
livenessProbe:
  httpGet:
    path: /healthz
    port: metrics
  periodSeconds: 10
  timeoutSeconds: 3
  failureThreshold: 6
readinessProbe:
  httpGet:
    path: /readyz
    port: metrics
  periodSeconds: 5
  timeoutSeconds: 3
  failureThreshold: 3
startupProbe:
  httpGet:
    path: /healthz
    port: metrics
  periodSeconds: 2
  failureThreshold: 60
{{- end -}}

{{- define "switchyard.podSecurity" -}}
{{- include "switchyard.podSecurityAs" (dict "root" . "serviceAccount" (include "switchyard.serviceAccountName" .)) }}
{{- end -}}

{{- define "switchyard.podSecurityAs" -}}
serviceAccountName: {{ .serviceAccount }}
automountServiceAccountToken: {{ .root.Values.vault.agentInjector.enabled }}
securityContext:
  {{- toYaml .root.Values.podSecurityContext | nindent 2 }}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{- define "switchyard.prometheusRuleEnabled" -}}
{{- $want := .Values.metrics.prometheusRule.enabled -}}
{{- if or (eq (toString $want) "true") (and (eq (toString $want) "auto") (.Capabilities.APIVersions.Has "monitoring.coreos.com/v1")) -}}true{{- end -}}
{{- end -}}

{{- define "switchyard.serviceMonitorEnabled" -}}
{{- $want := .Values.metrics.serviceMonitor.enabled -}}
{{- if or (eq (toString $want) "true") (and (eq (toString $want) "auto") (.Capabilities.APIVersions.Has "monitoring.coreos.com/v1")) -}}true{{- end -}}
{{- end -}}

{{/* A PDB counts only ready pods as available: when every pod is unready (workers while
Vault is down), this lets a node drain evict them instead of blocking on the budget. */}}
{{- define "switchyard.pdbEvictionPolicy" -}}
{{- if semverCompare ">=1.27-0" .Capabilities.KubeVersion.Version }}
unhealthyPodEvictionPolicy: AlwaysAllow
{{- end }}
{{- end -}}
