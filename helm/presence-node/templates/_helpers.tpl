{{/*
Expand the name of the chart.
*/}}
{{- define "presence-node.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Create a default fully qualified app name.
We truncate at 63 chars because some Kubernetes name fields are limited to this (by the DNS naming spec).
If release name contains chart name it will be used as a full name.
*/}}
{{- define "presence-node.fullname" -}}
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
Create chart name and version as used by the chart label.
*/}}
{{- define "presence-node.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels
*/}}
{{- define "presence-node.labels" -}}
helm.sh/chart: {{ include "presence-node.chart" . }}
{{ include "presence-node.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Selector labels
*/}}
{{- define "presence-node.selectorLabels" -}}
app.kubernetes.io/name: {{ include "presence-node.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Create the name of the service account to use
*/}}
{{- define "presence-node.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "presence-node.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The container image: repository@digest when a digest is given, else repository:tag (tag defaults to appVersion).
*/}}
{{- define "presence-node.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion | toString) }}
{{- end }}
{{- end }}

{{/*
Environment variable of every config.* key. The node reads PRESENCE_* (and RUST_LOG); names
come from the README's configuration table. Keys missing here fail the render.
*/}}
{{- define "presence-node.configEnvNames" -}}
keyPrefix: PRESENCE_KEY_PREFIX
logFormat: PRESENCE_LOG_FORMAT
logLevel: RUST_LOG
heartbeatIntervalMs: PRESENCE_HEARTBEAT_INTERVAL_MS
sessionTtlMs: PRESENCE_SESSION_TTL_MS
helloTimeoutMs: PRESENCE_HELLO_TIMEOUT_MS
offlineGraceMs: PRESENCE_OFFLINE_GRACE_MS
stormThreshold: PRESENCE_STORM_THRESHOLD
stormWindowMs: PRESENCE_STORM_WINDOW_MS
stormGraceMs: PRESENCE_STORM_GRACE_MS
nodeLeaseTtlMs: PRESENCE_NODE_LEASE_TTL_MS
maxSubscriptions: PRESENCE_MAX_SUBSCRIPTIONS
maxSessionsPerUser: PRESENCE_MAX_SESSIONS_PER_USER
maxSessions: PRESENCE_MAX_SESSIONS
maxSessionAgeMs: PRESENCE_MAX_SESSION_AGE_MS
maxIdsPerRequest: PRESENCE_MAX_IDS_PER_REQUEST
maxUserIdBytes: PRESENCE_MAX_USER_ID_BYTES
maxStatusTextBytes: PRESENCE_MAX_STATUS_TEXT_BYTES
statusRatePerS: PRESENCE_STATUS_RATE_PER_S
statusRateBurst: PRESENCE_STATUS_RATE_BURST
subscribeRatePerS: PRESENCE_SUBSCRIBE_RATE_PER_S
subscribeRateBurst: PRESENCE_SUBSCRIBE_RATE_BURST
maxLingeringPerUser: PRESENCE_MAX_LINGERING_PER_USER
sessionOpenRatePerS: PRESENCE_SESSION_OPEN_RATE_PER_S
sessionOpenRateBurst: PRESENCE_SESSION_OPEN_RATE_BURST
userChangeRatePerS: PRESENCE_USER_CHANGE_RATE_PER_S
userChangeRateBurst: PRESENCE_USER_CHANGE_RATE_BURST
getRatePerS: PRESENCE_GET_RATE_PER_S
getRateBurst: PRESENCE_GET_RATE_BURST
frameRatePerS: PRESENCE_FRAME_RATE_PER_S
frameRateBurst: PRESENCE_FRAME_RATE_BURST
maxUnreadFrames: PRESENCE_MAX_UNREAD_FRAMES
maxUnreadBytes: PRESENCE_MAX_UNREAD_BYTES
shutdownGraceMs: PRESENCE_SHUTDOWN_GRACE_MS
statusRetentionMs: PRESENCE_STATUS_RETENTION_MS
maxConcurrentStreams: PRESENCE_MAX_CONCURRENT_STREAMS
maxMessageBytes: PRESENCE_MAX_MESSAGE_BYTES
keepaliveIntervalMs: PRESENCE_KEEPALIVE_INTERVAL_MS
keepaliveTimeoutMs: PRESENCE_KEEPALIVE_TIMEOUT_MS
maxConnections: PRESENCE_MAX_CONNECTIONS
connectionIdleTimeoutMs: PRESENCE_CONNECTION_IDLE_TIMEOUT_MS
maxHeaderListBytes: PRESENCE_MAX_HEADER_LIST_BYTES
maxPendingHellosPerConnection: PRESENCE_MAX_PENDING_HELLOS_PER_CONNECTION
sweepIntervalMs: PRESENCE_SWEEP_INTERVAL_MS
resyncIntervalMs: PRESENCE_RESYNC_INTERVAL_MS
redisCaFile: PRESENCE_REDIS_CA_FILE
redisPoolSize: PRESENCE_REDIS_POOL_SIZE
watchPolicy: PRESENCE_WATCH_POLICY
authorizerUrl: PRESENCE_AUTHORIZER_URL
authorizerTimeoutMs: PRESENCE_AUTHORIZER_TIMEOUT_MS
authorizerCacheMs: PRESENCE_AUTHORIZER_CACHE_MS
authorizerCacheEntries: PRESENCE_AUTHORIZER_CACHE_ENTRIES
{{- end }}

{{/*
A value as an env string. Helm reads YAML numbers as float64, which would print 2592000000 as
"2.592e+09", so whole numbers are printed as integers.
*/}}
{{- define "presence-node.envString" -}}
{{- if or (kindIs "float64" .) (kindIs "int" .) (kindIs "int64" .) }}
{{- printf "%d" (int64 .) }}
{{- else }}
{{- toString . }}
{{- end }}
{{- end }}

{{/* Name of the Secret the chart creates for values given inline. */}}
{{- define "presence-node.secretName" -}}
{{- include "presence-node.fullname" . }}
{{- end }}

{{/* Secret (name) holding the Redis URL, or "" for the embedded store. */}}
{{- define "presence-node.redisSecretName" -}}
{{- if .Values.redis.existingSecret }}
{{- .Values.redis.existingSecret }}
{{- else if .Values.redis.url }}
{{- include "presence-node.secretName" . }}
{{- end }}
{{- end }}

{{- define "presence-node.redisSecretKey" -}}
{{- if .Values.redis.existingSecret }}
{{- .Values.redis.existingSecretKey }}
{{- else }}
{{- print "redis-url" }}
{{- end }}
{{- end }}

{{/* Secret holding the JWT HS256 secret or the PEM public key. */}}
{{- define "presence-node.jwtSecretName" -}}
{{- default (include "presence-node.secretName" .) .Values.auth.jwt.existingSecret }}
{{- end }}

{{- define "presence-node.jwtSecretKey" -}}
{{- if .Values.auth.jwt.existingSecret }}
{{- .Values.auth.jwt.existingSecretSecretKey }}
{{- else }}
{{- print "jwt-secret" }}
{{- end }}
{{- end }}

{{- define "presence-node.jwtPublicKeyKey" -}}
{{- if .Values.auth.jwt.existingSecret }}
{{- .Values.auth.jwt.existingSecretPublicKeyKey }}
{{- else }}
{{- print "jwt-public-key.pem" }}
{{- end }}
{{- end }}

{{/* Where the PEM public key is mounted (a directory of its own, read-only). */}}
{{- define "presence-node.jwtPublicKeyDir" -}}
/etc/presence-node/jwt
{{- end }}

{{/* "true" when the admin API has a token (inline or from a Secret); without one it relies on admin mTLS. */}}
{{- define "presence-node.adminHasToken" -}}
{{- if or .Values.admin.existingSecret .Values.admin.token }}true{{- end }}
{{- end }}

{{- define "presence-node.adminSecretName" -}}
{{- default (include "presence-node.secretName" .) .Values.admin.existingSecret }}
{{- end }}

{{- define "presence-node.adminSecretKey" -}}
{{- if .Values.admin.existingSecret }}
{{- .Values.admin.existingSecretKey }}
{{- else }}
{{- print "admin-token" }}
{{- end }}
{{- end }}

{{/* Where the TLS Secret and the client CA bundles are mounted (read-only directories). */}}
{{- define "presence-node.tlsDir" -}}
/etc/presence-node/tls
{{- end }}
{{- define "presence-node.tlsClientCaDir" -}}
/etc/presence-node/tls-client-ca
{{- end }}
{{- define "presence-node.tlsAdminClientCaDir" -}}
/etc/presence-node/tls-admin-client-ca
{{- end }}

{{/*
The action of a probe: the native gRPC health check, or (tls.enabled: the kubelet's gRPC probe
speaks no TLS, and the image has no health-check command for an exec probe) a TCP check of the
gRPC port. Called with (dict "root" $ "service" NAME); the service is always written out, so
liveness visibly asks for "" (the process, never Redis).
*/}}
{{- define "presence-node.probeAction" -}}
{{- if .root.Values.tls.enabled }}
tcpSocket:
  port: {{ .root.Values.containerPorts.grpc }}
{{- else }}
grpc:
  port: {{ .root.Values.containerPorts.grpc }}
  service: {{ .service | quote }}
{{- end }}
{{- end }}

{{/* Secret (name) holding the authorizer's bearer token, or "" when none is set. */}}
{{- define "presence-node.authorizerSecretName" -}}
{{- if .Values.authorizer.existingSecret }}
{{- .Values.authorizer.existingSecret }}
{{- else if .Values.authorizer.token }}
{{- include "presence-node.secretName" . }}
{{- end }}
{{- end }}

{{- define "presence-node.authorizerSecretKey" -}}
{{- if .Values.authorizer.existingSecret }}
{{- .Values.authorizer.existingSecretKey }}
{{- else }}
{{- print "authorizer-token" }}
{{- end }}
{{- end }}

{{/* "true" when the JWT mode verifies with a public key (RS256/ES256). */}}
{{- define "presence-node.jwtUsesPublicKey" -}}
{{- if and (eq .Values.auth.mode "jwt") (ne .Values.auth.jwt.algorithm "HS256") }}true{{- end }}
{{- end }}

{{/* Seconds of the preStop sleep, 0 when disabled. */}}
{{- define "presence-node.preStopSeconds" -}}
{{- if .Values.lifecycle.preStop.enabled }}{{ int64 .Values.lifecycle.preStop.seconds }}{{ else }}0{{ end }}
{{- end }}

{{/*
terminationGracePeriodSeconds: the preStop sleep runs first, then SIGTERM starts a drain of at
most config.shutdownGraceMs; 5 s more so the process exits on its own before the SIGKILL.
*/}}
{{- define "presence-node.terminationGracePeriodSeconds" -}}
{{- if not (kindIs "invalid" .Values.terminationGracePeriodSeconds) }}
{{- int64 .Values.terminationGracePeriodSeconds }}
{{- else }}
{{- $graceMs := 20000 }}
{{- if not (kindIs "invalid" .Values.config.shutdownGraceMs) }}
{{- $graceMs = int64 .Values.config.shutdownGraceMs }}
{{- end }}
{{- add (div (add $graceMs 999) 1000) (include "presence-node.preStopSeconds" . | int64) 5 }}
{{- end }}
{{- end }}

{{/*
Refuse values the node would reject at start (exit code 64, a crash loop) or that make a broken
cluster, with a message that names the value.
*/}}
{{- define "presence-node.validateValues" -}}
{{- $errors := list }}
{{- if not (has .Values.auth.mode (list "insecure" "jwt")) }}
{{- $errors = append $errors (printf "auth.mode must be insecure or jwt, not %q" (toString .Values.auth.mode)) }}
{{- end }}
{{- if and (eq .Values.auth.mode "insecure") (ne (toString .Values.auth.allowInsecure) "true") }}
{{- $errors = append $errors "auth.mode=insecure lets any caller claim any user id, and the pod listens on 0.0.0.0: set auth.allowInsecure=true to accept that (development only), or use auth.mode=jwt" }}
{{- end }}
{{- if not (has (toString .Values.auth.allowInsecure) (list "true" "false")) }}
{{- $errors = append $errors (printf "auth.allowInsecure must be true or false, not %q" (toString .Values.auth.allowInsecure)) }}
{{- end }}
{{- if eq .Values.auth.mode "jwt" }}
{{- $alg := .Values.auth.jwt.algorithm }}
{{- if not (has $alg (list "HS256" "RS256" "ES256")) }}
{{- $errors = append $errors (printf "auth.jwt.algorithm must be HS256, RS256 or ES256, not %q" (toString $alg)) }}
{{- else if and (eq $alg "HS256") (not .Values.auth.jwt.existingSecret) (not .Values.auth.jwt.secret) }}
{{- $errors = append $errors "auth.mode=jwt (the default) with HS256 needs auth.jwt.existingSecret or auth.jwt.secret, the key tokens are verified with (kubectl create secret generic presence-jwt --from-literal=jwt-secret=...; --set auth.jwt.existingSecret=presence-jwt). For development only: auth.mode=insecure with auth.allowInsecure=true" }}
{{- else if and (eq $alg "HS256") (not .Values.auth.jwt.existingSecret) (eq (trim (toString .Values.auth.jwt.secret)) "") }}
{{- $errors = append $errors "auth.jwt.secret is blank" }}
{{- else if and (ne $alg "HS256") (not .Values.auth.jwt.existingSecret) (not .Values.auth.jwt.publicKey) }}
{{- $errors = append $errors (printf "auth.mode=jwt with %s needs auth.jwt.existingSecret or auth.jwt.publicKey" $alg) }}
{{- end }}
{{- end }}
{{- if not (has .Values.redis.mode (list "standalone" "cluster")) }}
{{- $errors = append $errors (printf "redis.mode must be standalone or cluster, not %q" (toString .Values.redis.mode)) }}
{{- end }}
{{- if and .Values.redis.url (not .Values.redis.existingSecret) }}
{{- $urls := splitList "," (toString .Values.redis.url) }}
{{- range $urls }}
{{- if not (hasPrefix "redis://" (trim .)) }}
{{- $errors = append $errors "redis.url must be redis://[user:password@]host:port[/db] (rediss:// is not supported by the node yet)" }}
{{- end }}
{{- end }}
{{- if and (gt (len $urls) 1) (ne .Values.redis.mode "cluster") }}
{{- $errors = append $errors "redis.url lists several URLs: that needs redis.mode=cluster" }}
{{- end }}
{{- end }}
{{- if not (include "presence-node.redisSecretName" .) }}
{{- if .Values.autoscaling.enabled }}
{{- $errors = append $errors "autoscaling.enabled needs Redis (redis.url or redis.existingSecret): without it every node has its own embedded store and they disagree" }}
{{- else if gt (int64 .Values.replicaCount) 1 }}
{{- $errors = append $errors "replicaCount > 1 needs Redis (redis.url or redis.existingSecret): without it every node has its own embedded store and they disagree" }}
{{- end }}
{{- end }}
{{- if and .Values.metrics.serviceMonitor.enabled (not .Values.metrics.enabled) }}
{{- $errors = append $errors "metrics.serviceMonitor.enabled needs metrics.enabled" }}
{{- end }}
{{- if and .Values.tls.enabled (not .Values.tls.existingSecret) }}
{{- $errors = append $errors "tls.enabled needs tls.existingSecret (a Secret with tls.crt and tls.key)" }}
{{- end }}
{{- if and (not .Values.tls.enabled) (or .Values.tls.clientCa.enabled .Values.tls.adminClientCa.enabled) }}
{{- $errors = append $errors "tls.clientCa.enabled and tls.adminClientCa.enabled need tls.enabled (client certificates need TLS)" }}
{{- end }}
{{- if and .Values.admin.enabled (not .Values.admin.existingSecret) }}
{{- if and .Values.admin.token (eq (trim (toString .Values.admin.token)) "") }}
{{- $errors = append $errors "admin.token is blank: the node refuses an empty admin token" }}
{{- else if and (not .Values.admin.token) (not (and .Values.tls.enabled .Values.tls.adminClientCa.enabled)) }}
{{- $errors = append $errors "admin.enabled needs admin.existingSecret or admin.token (the admin API listens on 0.0.0.0 in the pod), or admin mTLS (tls.enabled and tls.adminClientCa.enabled)" }}
{{- end }}
{{- end }}
{{- $names := include "presence-node.configEnvNames" . | fromYaml }}
{{- range $key, $value := .Values.config }}
{{- if not (hasKey $names $key) }}
{{- $errors = append $errors (printf "config.%s is not a known setting (use extraEnv for settings this chart does not know)" $key) }}
{{- end }}
{{- end }}
{{- $hb := .Values.config.heartbeatIntervalMs }}
{{- $ttl := .Values.config.sessionTtlMs }}
{{- if and (not (kindIs "invalid" $hb)) (not (kindIs "invalid" $ttl)) }}
{{- if le (int64 $ttl) (int64 $hb) }}
{{- $errors = append $errors "config.sessionTtlMs must be larger than config.heartbeatIntervalMs, or healthy clients expire" }}
{{- end }}
{{- end }}
{{- if $errors }}
{{- $errors = uniq $errors }}
{{- fail (printf "\n\nVALUES ERROR (presence-node):\n  - %s\n" (join "\n  - " $errors)) }}
{{- end }}
{{- end }}

{{/* Timings of a probe from its values block (everything but `enabled`). */}}
{{- define "presence-node.probeTimings" -}}
{{- $timings := omit . "enabled" }}
{{- range $key := list "initialDelaySeconds" "periodSeconds" "timeoutSeconds" "failureThreshold" "successThreshold" }}
{{- if hasKey $timings $key }}
{{ $key }}: {{ int64 (get $timings $key) }}
{{- end }}
{{- end }}
{{- end }}
