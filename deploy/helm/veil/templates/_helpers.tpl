{{- define "veil.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "veil.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "veil.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "veil.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels every object carries; "veil.selector" with a component picks one role's pods. */}}
{{- define "veil.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "veil.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "veil.selector" -}}
app.kubernetes.io/name: {{ include "veil.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "veil.secretName" -}}
{{- default (include "veil.fullname" .) .Values.secrets.existingSecret -}}
{{- end -}}

{{/* An image reference from one of .Values.images (by key). */}}
{{- define "veil.image" -}}
{{- $image := index .root.Values.images .key -}}
{{- if not $image -}}{{- fail (printf "images.%s is not defined" .key) -}}{{- end -}}
{{- printf "%s:%s" $image.repository (default .root.Chart.AppVersion $image.tag) -}}
{{- end -}}

{{/* Every enabled worker pool, its values merged over workers.defaults: a dict of name -> pool. */}}
{{- define "veil.workerPools" -}}
{{- $pools := dict -}}
{{- range $name, $pool := .Values.workers.pools -}}
{{- $merged := mergeOverwrite (deepCopy $.Values.workers.defaults) (deepCopy (default dict $pool)) -}}
{{- if $merged.enabled -}}{{- $_ := set $pools $name $merged -}}{{- end -}}
{{- end -}}
{{- toYaml $pools -}}
{{- end -}}

{{/* True when no enabled pool keeps a worker running: then /readyz has no worker to find while idle. */}}
{{- define "veil.scalesToZero" -}}
{{- $pools := include "veil.workerPools" . | fromYaml -}}
{{- $kept := false -}}
{{- range $name, $pool := $pools -}}
{{- if $pool.autoscaling.enabled -}}
{{- if gt (int $pool.autoscaling.minReplicaCount) 0 -}}{{- $kept = true -}}{{- end -}}
{{- else if gt (int $pool.replicas) 0 -}}{{- $kept = true -}}
{{- end -}}
{{- end -}}
{{- if not $kept -}}true{{- end -}}
{{- end -}}

{{- define "veil.gatewayReadinessPath" -}}
{{- if ne .Values.gateway.readinessPath "auto" -}}
{{- .Values.gateway.readinessPath -}}
{{- else if include "veil.scalesToZero" . -}}
/healthz
{{- else -}}
/readyz
{{- end -}}
{{- end -}}

{{/* A worker's drain on SIGTERM: VEIL_WORKER__DRAIN_SECONDS if given, else the job timeout (45 s by
default, shared/settings.py), so a job started just before SIGTERM may finish. */}}
{{- define "veil.workerDrainSeconds" -}}
{{- $timeout := default "45" (index .Values.config "VEIL_WORKER__JOB_TIMEOUT_SECONDS") -}}
{{- int (default $timeout (index .Values.config "VEIL_WORKER__DRAIN_SECONDS")) -}}
{{- end -}}

{{/* The gateway's drain of open requests: VEIL_GATEWAY__DRAIN_SECONDS if given, else the facade timeout
(30 s by default), the longest the gateway holds a request open. */}}
{{- define "veil.gatewayDrainSeconds" -}}
{{- $facade := default "30" (index .Values.config "VEIL_GATEWAY__FACADE_TIMEOUT_SECONDS") -}}
{{- int (default $facade (index .Values.config "VEIL_GATEWAY__DRAIN_SECONDS")) -}}
{{- end -}}

{{/* Lanes of a CPU pool: its requested cores (whole, at least 1) unless set; GPU pools: the worker's own. */}}
{{- define "veil.lanes" -}}
{{- $pool := .pool -}}
{{- if gt (int $pool.lanes) 0 -}}
{{- int $pool.lanes -}}
{{- else if eq (int $pool.gpus) 0 -}}
{{- $cpu := toString (dig "requests" "cpu" "1" $pool.resources) -}}
{{- if hasSuffix "m" $cpu -}}
{{- max 1 (div (atoi (trimSuffix "m" $cpu)) 1000) -}}
{{- else -}}
{{- max 1 (int (float64 $cpu)) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The Redis URL KEDA's trigger takes apart (host:port, database, TLS), when the chart knows it. */}}
{{- define "veil.redisUrl" -}}
{{- if .Values.trial.enabled -}}
{{- /* Qualified: KEDA's operator resolves it from its own namespace. */ -}}
{{- printf "redis://%s-redis.%s.svc:6379/0" (include "veil.fullname" .) .Release.Namespace -}}
{{- else -}}
{{- .Values.secrets.redisUrl -}}
{{- end -}}
{{- end -}}

{{/* Pod-level security context of every pod this chart runs. */}}
{{- define "veil.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .uid }}
runAsGroup: {{ .uid }}
fsGroup: {{ .uid }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Container-level security context of every container this chart runs. */}}
{{- define "veil.containerSecurityContext" -}}
runAsNonRoot: true
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* A Redis URL in parts (scheme, userinfo, host, path segments), by hand: Go's URL parser refuses the
Sentinel form's host list (redis+sentinel://h1:26379,h2:26379/mymaster/0, shared/redisurl.py). */}}
{{- define "veil.redisUrlParts" -}}
{{- $url := . -}}
{{- $scheme := lower (first (splitList "://" $url)) -}}
{{- $rest := first (splitList "?" (regexReplaceAll "^[^:/]+://" $url "")) -}}
{{- $userinfo := trimSuffix "@" (regexFind "^.*@" $rest) -}}
{{- $location := regexReplaceAll "^.*@" $rest "" -}}
{{- $segments := splitList "/" $location -}}
{{- dict "scheme" $scheme "userinfo" $userinfo "host" (first $segments) "path" (rest $segments) | toYaml -}}
{{- end -}}

{{/* Redis's password for KEDA: secrets.redisPassword, else the one in the URL (redis://[user]:PASSWORD@…). */}}
{{- define "veil.redisPassword" -}}
{{- if .Values.secrets.redisPassword -}}
{{- .Values.secrets.redisPassword -}}
{{- else if .Values.secrets.redisUrl -}}
{{- $userinfo := (include "veil.redisUrlParts" .Values.secrets.redisUrl | fromYaml).userinfo -}}
{{- if contains ":" $userinfo -}}{{- index (splitn ":" 2 $userinfo) "_1" -}}{{- end -}}
{{- end -}}
{{- end -}}

{{/* Redis's ACL user for KEDA, when the URL names one (redis://USER:PASSWORD@…). */}}
{{- define "veil.redisUsername" -}}
{{- if .Values.secrets.redisUrl -}}
{{- $userinfo := (include "veil.redisUrlParts" .Values.secrets.redisUrl | fromYaml).userinfo -}}
{{- first (splitList ":" $userinfo) -}}
{{- end -}}
{{- end -}}

{{/* Egress of the gateway and the workers: DNS, Redis, S3, and the internet outside private ranges. */}}
{{- define "veil.egress" -}}
{{- $np := .Values.networkPolicy -}}
# DNS: the cluster's resolver only.
- to:
    - namespaceSelector:
        matchLabels: {kubernetes.io/metadata.name: {{ $np.dns.namespace }}}
      podSelector:
        matchLabels:
          {{- toYaml $np.dns.podLabels | nindent 10 }}
  ports:
    - {protocol: UDP, port: 53}
    - {protocol: TCP, port: 53}
{{- range $service, $port := dict "redis" 6379 "s3" 8333 }}
{{- if $.Values.trial.enabled }}
# The trial {{ $service }} in this release.
- to:
    - podSelector:
        matchLabels:
          {{- include "veil.selector" (dict "root" $ "component" (printf "trial-%s" $service)) | nindent 10 }}
  ports:
    - {protocol: TCP, port: {{ $port }}}
{{- else }}
{{- $rule := index $np $service }}
# The external {{ $service }} (networkPolicy.{{ $service }}: any address on its ports when no CIDR is given).
- to:
    {{- range (default (list "0.0.0.0/0") $rule.cidrs) }}
    - ipBlock: {cidr: {{ . }}}
    {{- end }}
  ports:
    {{- range $rule.ports }}
    - {protocol: TCP, port: {{ . }}}
    {{- end }}
{{- end }}
{{- end }}
# Outside the cluster and the private ranges: webhooks (workers), image_url fetches (gateway).
- to:
    - ipBlock:
        cidr: 0.0.0.0/0
        except:
          {{- toYaml $np.internet.except | nindent 10 }}
  {{- with $np.internet.ports }}
  ports:
    {{- range . }}
    - {protocol: TCP, port: {{ . }}}
    {{- end }}
  {{- end }}
{{- end }}

{{/* Values a release cannot run without, checked in one order whichever template renders first. */}}
{{- define "veil.validate" -}}
{{- if not (or .Values.trial.enabled .Values.secrets.existingSecret .Values.secrets.redisUrl) -}}
{{- fail "secrets.redisUrl is required (redis://:PASSWORD@host:6379/0), or secrets.existingSecret, or trial.enabled=true" -}}
{{- end -}}
{{- if not (or .Values.trial.enabled (index .Values.config "VEIL_S3__ENDPOINT_URL")) -}}
{{- fail "config.VEIL_S3__ENDPOINT_URL is required (the S3 endpoint, e.g. https://s3.eu-west-1.amazonaws.com), or set trial.enabled=true" -}}
{{- end -}}
{{- if not (has .Values.autoscaling.trigger (list "redis" "prometheus")) -}}
{{- fail (printf "autoscaling.trigger must be redis or prometheus, not %q" .Values.autoscaling.trigger) -}}
{{- end -}}
{{- end -}}
