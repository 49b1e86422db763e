{{/*
Chart name, overridable with nameOverride.
*/}}
{{- define "keygate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified name: <release>-<chart>, or the release name when it already contains the
chart name. Truncated to 63 characters (DNS label limit); suffixed names use the first 48.
*/}}
{{- define "keygate.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Base for names that get a suffix (-policy, -database, -migrate, -headless, -test).
*/}}
{{- define "keygate.shortname" -}}
{{- include "keygate.fullname" . | trunc 48 | trimSuffix "-" }}
{{- end }}

{{/*
Chart label value: <name>-<version>.
*/}}
{{- define "keygate.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of every resource.
*/}}
{{- define "keygate.labels" -}}
helm.sh/chart: {{ include "keygate.chart" . }}
{{ include "keygate.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: keygate
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Selector labels shared by every component of the release.
*/}}
{{- define "keygate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "keygate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Selector labels of the Keygate server pods (the Deployment, Services, PDB, NetworkPolicy).
*/}}
{{- define "keygate.serverSelectorLabels" -}}
{{ include "keygate.selectorLabels" . }}
app.kubernetes.io/component: server
{{- end }}

{{/*
ServiceAccount of the server pods.
*/}}
{{- define "keygate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "keygate.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
ServiceAccount of the migration Job. A pre-install hook runs before the chart's own
ServiceAccount exists, so the Job uses the namespace's default account unless told otherwise.
*/}}
{{- define "keygate.migrationServiceAccountName" -}}
{{- if .Values.migrations.job.serviceAccountName }}
{{- .Values.migrations.job.serviceAccountName }}
{{- else if .Values.serviceAccount.create }}
{{- "default" }}
{{- else }}
{{- include "keygate.serviceAccountName" . }}
{{- end }}
{{- end }}

{{/*
Container image reference.
*/}}
{{- define "keygate.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
True (non-empty) when migrations run in a hook Job.
*/}}
{{- define "keygate.migrationJob" -}}
{{- if eq .Values.migrations.mode "job" }}true{{ end }}
{{- end }}

{{/*
True (non-empty) when the chart creates the database Secret.
*/}}
{{- define "keygate.createDatabaseSecret" -}}
{{- if not .Values.database.existingSecret }}true{{ end }}
{{- end }}

{{/*
True (non-empty) when the chart's database Secret must be a hook: the migration Job is a
pre-install hook, which runs before ordinary resources exist, and it reads this Secret.
*/}}
{{- define "keygate.databaseSecretIsHook" -}}
{{- if and (include "keygate.createDatabaseSecret" .) (include "keygate.migrationJob" .) (not .Values.migrations.job.existingSecret) }}true{{ end }}
{{- end }}

{{/*
Name of the Secret holding the database URL. The hook variant has its own name so that
switching migrations.mode on an existing release never deletes the Secret in use.
*/}}
{{- define "keygate.databaseSecretName" -}}
{{- if .Values.database.existingSecret }}
{{- .Values.database.existingSecret }}
{{- else if include "keygate.databaseSecretIsHook" . }}
{{- printf "%s-database-hook" (include "keygate.shortname" .) }}
{{- else }}
{{- printf "%s-database" (include "keygate.shortname" .) }}
{{- end }}
{{- end }}

{{/*
Key of the database URL in that Secret.
*/}}
{{- define "keygate.databaseSecretKey" -}}
{{- if .Values.database.existingSecret }}
{{- .Values.database.existingSecretKey }}
{{- else }}
{{- "url" }}
{{- end }}
{{- end }}

{{/*
True (non-empty) when a policy file is mounted.
*/}}
{{- define "keygate.hasPolicy" -}}
{{- if or .Values.policy.existingConfigMap .Values.policy.content }}true{{ end }}
{{- end }}

{{/*
Name of the ConfigMap holding the policy file.
*/}}
{{- define "keygate.policyConfigMapName" -}}
{{- if .Values.policy.existingConfigMap }}
{{- .Values.policy.existingConfigMap }}
{{- else }}
{{- printf "%s-policy" (include "keygate.shortname" .) }}
{{- end }}
{{- end }}

{{/*
Renders `- name: NAME / value: "VALUE"` when the value is set (not null). Integers are
printed as integers: Helm reads numbers as floats, which would print 1000000 as 1e+06.
Usage: include "keygate.optionalEnv" (list "NAME" .Values.some.value)
*/}}
{{- define "keygate.optionalEnv" -}}
{{- $name := index . 0 }}
{{- $value := index . 1 }}
{{- if not (kindIs "invalid" $value) }}
{{- if or (kindIs "float64" $value) (kindIs "int64" $value) (kindIs "int" $value) }}
{{- $value = int64 $value | toString }}
{{- end }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end }}

{{/*
Environment shared by `serve` and `migrate`: database, logging, and the user's extra env.
*/}}
{{- define "keygate.commonEnv" -}}
- name: KEYGATE_LOG_FORMAT
  value: {{ .Values.config.logFormat | quote }}
- name: RUST_LOG
  value: {{ .Values.config.logLevel | quote }}
{{- include "keygate.optionalEnv" (list "KEYGATE_DATABASE_MAX_CONNECTIONS" .Values.database.maxConnections) }}
{{- end }}

{{/*
Checks of value combinations the schema cannot express. Included by the Deployment.
*/}}
{{- define "keygate.validate" -}}
{{- if not (or .Values.database.url .Values.database.existingSecret) }}
{{- fail "keygate: set database.url (the chart stores it in a Secret) or database.existingSecret (an existing Secret holding the Postgres URL)" }}
{{- end }}
{{- if and .Values.tls.enabled (not .Values.tls.existingSecret) }}
{{- fail "keygate: tls.enabled needs tls.existingSecret (a kubernetes.io/tls Secret with tls.crt and tls.key)" }}
{{- end }}
{{- if and .Values.tls.clientCa.enabled (not .Values.tls.enabled) }}
{{- fail "keygate: tls.clientCa.enabled (mutual TLS) needs tls.enabled" }}
{{- end }}
{{- if le (int64 .Values.terminationGracePeriodSeconds) (int64 .Values.config.drainSeconds) }}
{{- fail (printf "keygate: terminationGracePeriodSeconds (%d) must exceed config.drainSeconds (%d), or in-flight calls are killed before they drain" (int64 .Values.terminationGracePeriodSeconds) (int64 .Values.config.drainSeconds)) }}
{{- end }}
{{- if and .Values.metrics.serviceMonitor.enabled (not .Values.metrics.enabled) }}
{{- fail "keygate: metrics.serviceMonitor.enabled needs metrics.enabled" }}
{{- end }}
{{- if and .Values.migrations.job.existingSecret (ne .Values.migrations.mode "job") }}
{{- fail "keygate: migrations.job.existingSecret is only used with migrations.mode=job" }}
{{- end }}
{{- if and .Values.autoscaling.enabled (gt (int64 .Values.autoscaling.minReplicas) (int64 .Values.autoscaling.maxReplicas)) }}
{{- fail "keygate: autoscaling.minReplicas must not exceed autoscaling.maxReplicas" }}
{{- end }}
{{- end }}

{{/*
Probe handler: the kubelet's native gRPC check of a health service name or, with TLS on (the
kubelet's gRPC probes speak plaintext only), an exec probe running `keygate health` against the
container's own gRPC port over TLS (and mutual TLS), with the same service name.
Usage: include "keygate.probeHandler" (list $ "liveness" .timeoutSeconds)
*/}}
{{- define "keygate.probeHandler" -}}
{{- $root := index . 0 }}
{{- $service := index . 1 }}
{{- $timeoutSeconds := int64 (index . 2) }}
{{- $grpcPort := int64 $root.Values.containerPorts.grpc }}
{{- if $root.Values.tls.enabled -}}
exec:
  command:
    - keygate
    - health
    - --server
    - {{ printf "https://127.0.0.1:%d" $grpcPort | quote }}
    - --ca-cert
    - /etc/keygate/probe-ca/ca.crt
    - --tls-server-name
    - {{ include "keygate.probeServerName" $root | quote }}
    {{- if $root.Values.tls.clientCa.enabled }}
    - --client-cert
    - {{ printf "%s/tls.crt" (include "keygate.probeClientDir" $root) }}
    - --client-key
    - {{ printf "%s/tls.key" (include "keygate.probeClientDir" $root) }}
    {{- end }}
    - --service
    - {{ $service | quote }}
    - --timeout
    - {{ printf "%ds" $timeoutSeconds | quote }}
{{- else -}}
grpc:
  port: {{ $grpcPort }}
  service: {{ $service | quote }}
{{- end }}
{{- end }}

{{/*
True (non-empty) when the probes run `keygate health` (TLS on and any probe enabled): the
probe CA, and under mutual TLS a client certificate, are then mounted.
*/}}
{{- define "keygate.execProbes" -}}
{{- $probes := .Values.probes }}
{{- if and .Values.tls.enabled (or $probes.startup.enabled $probes.liveness.enabled $probes.readiness.enabled) }}true{{ end }}
{{- end }}

{{/*
The name the exec probes expect in the server certificate: probes.tls.serverName, else the
Service's DNS name.
*/}}
{{- define "keygate.probeServerName" -}}
{{- default (printf "%s.%s.svc" (include "keygate.fullname" .) .Release.Namespace) .Values.probes.tls.serverName }}
{{- end }}

{{/*
Directory of the exec probes' client certificate under mutual TLS: their own Secret when
probes.tls.clientCertSecret is set, else the server's certificate.
*/}}
{{- define "keygate.probeClientDir" -}}
{{- ternary "/etc/keygate/probe-client" "/etc/keygate/tls" (not (empty .Values.probes.tls.clientCertSecret)) }}
{{- end }}

{{/*
Probe timing fields.
*/}}
{{- define "keygate.probeTiming" -}}
initialDelaySeconds: {{ .initialDelaySeconds }}
periodSeconds: {{ .periodSeconds }}
timeoutSeconds: {{ .timeoutSeconds }}
failureThreshold: {{ .failureThreshold }}
{{- end }}

{{/*
Environment of `serve`: the shared settings, then Keygate's tuning settings that are set.
*/}}
{{- define "keygate.serveSettingsEnv" -}}
{{ include "keygate.commonEnv" . }}
- name: KEYGATE_DRAIN_SECONDS
  value: {{ .Values.config.drainSeconds | int64 | toString | quote }}
{{- include "keygate.optionalEnv" (list "KEYGATE_DATABASE_UNHEALTHY_AFTER_SECONDS" .Values.database.unhealthyAfterSeconds) }}
{{- if not .Values.config.reflection }}
- name: KEYGATE_NO_REFLECTION
  value: "true"
{{- end }}
{{- if include "keygate.hasPolicy" . }}
- name: KEYGATE_POLICY
  value: /etc/keygate/policy/policy.yaml
{{- end }}
{{- if .Values.tls.enabled }}
- name: KEYGATE_TLS_CERT
  value: /etc/keygate/tls/tls.crt
- name: KEYGATE_TLS_KEY
  value: /etc/keygate/tls/tls.key
{{- if .Values.tls.clientCa.enabled }}
- name: KEYGATE_TLS_CLIENT_CA
  value: /etc/keygate/client-ca/ca.crt
{{- end }}
{{- end }}
{{- with .Values.config }}
{{- with .tokenPrefix }}
- name: KEYGATE_TOKEN_PREFIX
  value: {{ . | quote }}
{{- end }}
{{- include "keygate.optionalEnv" (list "KEYGATE_ARGON2_MEMORY_KIB" .argon2.memoryKib) }}
{{- include "keygate.optionalEnv" (list "KEYGATE_ARGON2_ITERATIONS" .argon2.iterations) }}
{{- include "keygate.optionalEnv" (list "KEYGATE_ARGON2_PARALLELISM" .argon2.parallelism) }}
{{- include "keygate.optionalEnv" (list "KEYGATE_HASH_CONCURRENCY" .hashConcurrency) }}
{{- include "keygate.optionalEnv" (list "KEYGATE_CACHE_CAPACITY" .cache.capacity) }}
{{- include "keygate.optionalEnv" (list "KEYGATE_CACHE_TTL_SECONDS" .cache.ttlSeconds) }}
{{- include "keygate.optionalEnv" (list "KEYGATE_NEGATIVE_CACHE_TTL_SECONDS" .cache.negativeTtlSeconds) }}
{{- include "keygate.optionalEnv" (list "KEYGATE_VERIFICATIONS_PER_KEY_PER_SECOND" .cache.verificationsPerKeyPerSecond) }}
{{- with .onUnverifiable }}
- name: KEYGATE_ON_UNVERIFIABLE
  value: {{ . | quote }}
{{- end }}
{{- include "keygate.optionalEnv" (list "KEYGATE_SERVE_STALE_MAX_SECONDS" .serveStaleMaxSeconds) }}
{{- include "keygate.optionalEnv" (list "KEYGATE_PROPAGATION_TIMEOUT_MS" .propagationTimeoutMs) }}
{{- include "keygate.optionalEnv" (list "KEYGATE_EVENT_RETENTION_DAYS" .eventRetentionDays) }}
{{- end }}
{{- end }}
