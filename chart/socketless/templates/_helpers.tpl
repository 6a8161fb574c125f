{{/* Chart name. */}}
{{- define "socketless.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified name. */}}
{{- define "socketless.fullname" -}}
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

{{- define "socketless.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Common labels. */}}
{{- define "socketless.labels" -}}
helm.sh/chart: {{ include "socketless.chart" . }}
{{ include "socketless.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The labels every object carries besides its selector labels. */}}
{{- define "socketless.commonLabels" -}}
helm.sh/chart: {{ include "socketless.chart" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Selector labels: name and instance only. */}}
{{- define "socketless.selectorLabels" -}}
app.kubernetes.io/name: {{ include "socketless.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "socketless.gatewayName" -}}
{{- printf "%s-gateway" (include "socketless.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The headless Service that names each gateway replica for its peers. */}}
{{- define "socketless.gatewayHeadlessName" -}}
{{- printf "%s-peers" (include "socketless.gatewayName" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The URL of every gateway replica, with {ordinal} for the replica's ordinal
(SOCKETLESS_GATEWAY_PEER_URL_TEMPLATE). No list and no count: the pod template is the same for
any gateway.replicaCount, so scaling changes only spec.replicas and rolls no replica.
*/}}
{{- define "socketless.gatewayPeerUrlTemplate" -}}
{{- printf "http://%s-{ordinal}.%s.%s.svc:%v" (include "socketless.gatewayName" .) (include "socketless.gatewayHeadlessName" .) .Release.Namespace .Values.gateway.service.port }}
{{- end }}

{{/* The gateway's keep-alive in seconds: gateway.keepAliveTimeoutSeconds, raised to the ALB's
idle timeout + 15 s when the gateway's Ingress is enabled. */}}
{{- define "socketless.gatewayKeepAlive" -}}
{{- $g := .Values.gateway }}
{{- $k := int $g.keepAliveTimeoutSeconds }}
{{- if $g.ingress.enabled }}{{ max $k (add (int $g.ingress.idleTimeoutSeconds) 15) }}{{ else }}{{ $k }}{{ end }}
{{- end }}

{{- define "socketless.gatewaySelectorLabels" -}}
app.kubernetes.io/name: {{ include "socketless.name" . }}-gateway
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "socketless.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "socketless.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* repository@digest when a digest is set (it wins over the tag), else repository:tag. */}}
{{- define "socketless.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Name and key of the Secret holding the shared secret; empty when sharedSecret.enabled=false. */}}
{{- define "socketless.secretName" -}}
{{- if .Values.sharedSecret.enabled }}
{{- if .Values.sharedSecret.existingSecret }}
{{- .Values.sharedSecret.existingSecret }}
{{- else }}
{{- printf "%s-shared-secret" (include "socketless.fullname" .) }}
{{- end }}
{{- end }}
{{- end }}

{{- define "socketless.secretKey" -}}
{{- if .Values.sharedSecret.existingSecret }}{{ .Values.sharedSecret.existingSecretKey }}{{ else }}shared-secret{{ end }}
{{- end }}

{{/*
The internal API's Bearer token (SOCKETLESS_INTERNAL_TOKEN): internalApi.token.existingSecret,
or the Secret the chart creates from internalApi.token.value, or else the shared secret's Secret
and key. Empty (no token) when none is set and sharedSecret.enabled=false.
*/}}
{{- define "socketless.internalTokenSecretName" -}}
{{- $t := .Values.internalApi.token }}
{{- if $t.existingSecret }}{{ $t.existingSecret }}
{{- else if $t.value }}{{ printf "%s-internal-token" (include "socketless.fullname" .) }}
{{- else }}{{ include "socketless.secretName" . }}
{{- end }}
{{- end }}

{{- define "socketless.internalTokenSecretKey" -}}
{{- $t := .Values.internalApi.token }}
{{- if $t.existingSecret }}{{ $t.existingSecretKey }}
{{- else if $t.value }}internal-token
{{- else }}{{ include "socketless.secretKey" . }}
{{- end }}
{{- end }}

{{/*
What the shared secret's pods read of it: the Secret's name and key, and a hash of the value
when the chart creates the Secret. An existing Secret's content is not visible to Helm: rename
the Secret (or use a reloader) when you rotate it.
*/}}
{{- define "socketless.secretInputs" -}}
{{- $s := .Values.sharedSecret }}
{{- toJson (dict "name" (include "socketless.secretName" .) "key" (include "socketless.secretKey" .) "value" (sha256sum (toString $s.value))) }}
{{- end }}

{{/*
Checksum of what the backend pod reads at start (environment variables are read only then): its
settings, extraEnv, the app sidecar, the shared secret and the internal token, and the push
endpoint derived from the gateway's Service. A change rolls the backend pods; nothing here is a
gateway setting, so a backend change never rolls the gateway.
*/}}
{{- define "socketless.backendChecksum" -}}
{{- $t := .Values.internalApi.token }}
{{- $token := dict "name" (include "socketless.internalTokenSecretName" .) "key" (include "socketless.internalTokenSecretKey" .) "value" (sha256sum (toString $t.value)) }}
{{- $push := dict "enabled" .Values.gateway.enabled "port" .Values.gateway.service.port "stage" .Values.gateway.stage }}
{{- $in := dict "secret" (include "socketless.secretInputs" .) "token" $token "config" .Values.config "extraEnv" .Values.extraEnv "app" .Values.app "push" $push }}
{{- toJson $in | sha256sum }}
{{- end }}

{{/*
Checksum of exactly what a gateway pod reads at start: the gateway's own values except those
that do not reach the pod (replicaCount, which only sets spec.replicas; the PDB, the Ingress and
the Service's type and annotations), the shared secret, config.logFormat and the backend's
Service port (its IntegrationUri). A backend change (config.sessionTtl, the app's image) never
rolls the gateway and its clients.
*/}}
{{- define "socketless.gatewayChecksum" -}}
{{- $g := omit .Values.gateway "replicaCount" "podDisruptionBudget" "ingress" "service" }}
{{- $in := dict "gateway" $g "port" .Values.gateway.service.port "secret" (include "socketless.secretInputs" .) "logFormat" .Values.config.logFormat "backendPort" .Values.service.port }}
{{- toJson $in | sha256sum }}
{{- end }}

{{/* The upstream app's image: repository@digest, or repository:tag. */}}
{{- define "socketless.appImage" -}}
{{- $i := .Values.app.image }}
{{- if $i.digest }}
{{- printf "%s@%s" $i.repository $i.digest }}
{{- else }}
{{- printf "%s:%s" $i.repository $i.tag }}
{{- end }}
{{- end }}

{{/* The gateway's in-cluster ws:// URL. */}}
{{- define "socketless.gatewayUrl" -}}
{{- printf "ws://%s.%s.svc:%v/%s" (include "socketless.gatewayName" .) .Release.Namespace .Values.gateway.service.port .Values.gateway.stage }}
{{- end }}

{{/* The replica count the backend can go down to: the autoscaler's minimum, or replicaCount. */}}
{{- define "socketless.minReplicas" -}}
{{- if .Values.keda.enabled }}{{ .Values.keda.minReplicaCount }}
{{- else if .Values.autoscaling.enabled }}{{ .Values.autoscaling.minReplicas }}
{{- else }}{{ .Values.replicaCount }}{{ end }}
{{- end }}

{{/* A Go duration (gateway.idleTimeout: 10m, 1h30m, 90s, 500ms) in whole seconds, rounded up. */}}
{{- define "socketless.durationSeconds" -}}
{{- $total := 0.0 }}
{{- range regexFindAll "[0-9]+(\\.[0-9]+)?(ms|s|m|h)" . -1 }}
{{- $n := float64 (regexFind "^[0-9]+(\\.[0-9]+)?" .) }}
{{- $unit := regexReplaceAll "^[0-9]+(\\.[0-9]+)?" . "" }}
{{- $mult := get (dict "ms" 0.001 "s" 1.0 "m" 60.0 "h" 3600.0) $unit }}
{{- $total = addf $total (mulf $n $mult) }}
{{- end }}
{{- ceil $total | int }}
{{- end }}

{{/*
Fails unless a target group's health-check interval exceeds its timeout: ELBv2 refuses a target
group whose timeout is not smaller than its interval, and the load balancer never comes up.
Called with (list WHAT ANNOTATIONS INTERVAL_KEY TIMEOUT_KEY) after the user's annotations are
merged in, so an override cannot break it either.
*/}}
{{- define "socketless.checkHealthCheckTiming" -}}
{{- $what := index . 0 }}
{{- $a := index . 1 }}
{{- $interval := index $a (index . 2) | default "" }}
{{- $timeout := index $a (index . 3) | default "" }}
{{- if or (not $interval) (not $timeout) }}
{{- fail (printf "%s: the health check needs both %s and %s (the controller's defaults differ by load balancer type)" $what (index . 2) (index . 3)) }}
{{- end }}
{{- if le (int $interval) (int $timeout) }}
{{- fail (printf "%s: health-check interval (%v s) must be greater than its timeout (%v s); ELBv2 refuses the target group otherwise (e.g. interval 10, timeout 5)" $what $interval $timeout) }}
{{- end }}
{{- end }}

{{/* A PDB value that would allow no eviction at all: maxUnavailable 0 or "0%", minAvailable "100%". */}}
{{- define "socketless.checkPdbValue" -}}
{{- $what := index . 0 }}
{{- $max := index . 1 }}
{{- $min := index . 2 }}
{{- if and (not (kindIs "invalid" $max)) (or (eq (toString $max) "0") (eq (toString $max) "0%")) }}
{{- fail (printf "%s.maxUnavailable is %v: no pod could ever be evicted and node drains would block. Use maxUnavailable: 1" $what $max) }}
{{- end }}
{{- if and (kindIs "invalid" $max) (not (kindIs "invalid" $min)) (eq (toString $min) "100%") }}
{{- fail (printf "%s.minAvailable is 100%%: no pod could ever be evicted and node drains would block. Use maxUnavailable: 1" $what) }}
{{- end }}
{{- end }}

{{/* Render-time checks that the schema cannot express; each message says what to do. */}}
{{- define "socketless.checks" -}}
{{- if and .Values.app.enabled (not .Values.app.image.repository) }}
{{- fail "app.enabled=true needs app.image.repository: the image of your HTTP app (serve calls it on app.port)" }}
{{- end }}
{{- $c := .Values.config }}
{{- $needed := add $c.shutdownDelaySeconds $c.drainTimeoutSeconds 5 }}
{{- if le (int .Values.terminationGracePeriodSeconds) (int $needed) }}
{{- fail (printf "terminationGracePeriodSeconds (%v) must exceed config.shutdownDelaySeconds + config.drainTimeoutSeconds + 5 s (= %v), or Kubernetes kills pods mid-drain: raise terminationGracePeriodSeconds" .Values.terminationGracePeriodSeconds $needed) }}
{{- end }}
{{- if .Values.gateway.enabled }}
{{- $gw := add .Values.gateway.shutdownDelaySeconds .Values.gateway.drainTimeoutSeconds 5 }}
{{- if le (int .Values.gateway.terminationGracePeriodSeconds) (int $gw) }}
{{- fail (printf "gateway.terminationGracePeriodSeconds (%v) must exceed gateway.shutdownDelaySeconds + gateway.drainTimeoutSeconds + 5 s (= %v): raise gateway.terminationGracePeriodSeconds" .Values.gateway.terminationGracePeriodSeconds $gw) }}
{{- end }}
{{- end }}
{{- if and .Values.keda.enabled .Values.autoscaling.enabled }}
{{- fail "keda.enabled and autoscaling.enabled are both true: choose one owner of the replica count" }}
{{- end }}
{{- $i := .Values.ingress }}
{{- if $i.enabled }}
{{- if le (int $c.keepAliveTimeoutSeconds) (int $i.idleTimeoutSeconds) }}
{{- fail (printf "config.keepAliveTimeoutSeconds (%v) must exceed ingress.idleTimeoutSeconds (%v): the ALB reuses idle connections for its idle timeout, and a backend that closes them first makes it answer 502. Raise config.keepAliveTimeoutSeconds (e.g. to idleTimeoutSeconds + 15)" $c.keepAliveTimeoutSeconds $i.idleTimeoutSeconds) }}
{{- end }}
{{- if lt (int $c.shutdownDelaySeconds) (int $i.controllerLagSeconds) }}
{{- fail (printf "config.shutdownDelaySeconds (%v) is shorter than ingress.controllerLagSeconds (%v): the ALB keeps sending new requests until the AWS Load Balancer Controller has deregistered the pod, and a pod that stopped accepting before then makes it answer 502. Raise config.shutdownDelaySeconds (and terminationGracePeriodSeconds)" $c.shutdownDelaySeconds $i.controllerLagSeconds) }}
{{- end }}
{{- if lt (int $i.deregistrationDelaySeconds) (int $c.drainTimeoutSeconds) }}
{{- fail (printf "ingress.deregistrationDelaySeconds (%v) must be at least config.drainTimeoutSeconds (%v): the deregistration delay is how long the ALB lets requests in flight finish, so it must cover the longest request the pod drains. Raise ingress.deregistrationDelaySeconds" $i.deregistrationDelaySeconds $c.drainTimeoutSeconds) }}
{{- end }}
{{- $https := or $i.certificateArn (contains "HTTPS" $i.listenPorts) }}
{{- if and (eq $i.scheme "internet-facing") (not $https) .Values.sharedSecret.enabled (not $i.allowPlainHttp) }}
{{- fail "ingress: an internet-facing ALB without HTTPS would carry the shared secret in plain text across the internet. Set ingress.certificateArn (an ACM certificate; the stack's IntegrationUri becomes https://<a name it covers>), or use service.type=LoadBalancer (an internal NLB) with the stack's VpcLinkTargetArn, or set ingress.allowPlainHttp=true if you accept the risk" }}
{{- end }}
{{- end }}
{{- if and (eq $c.store "memory") (or .Values.keda.enabled .Values.autoscaling.enabled (gt (int .Values.replicaCount) 1)) }}
{{- fail "config.store=memory keeps sessions in one pod: use dynamodb with more than one replica or an autoscaler" }}
{{- end }}
{{- $s := .Values.sharedSecret }}
{{- if $s.enabled }}
{{- if and $s.existingSecret $s.value }}
{{- fail "sharedSecret: set existingSecret or value, not both" }}
{{- end }}
{{- if not (or $s.existingSecret $s.value) }}
{{- fail "sharedSecret: no secret configured. Create one with the same value as the CloudFormation stack's SharedSecret and point the chart at it:\n  kubectl -n NAMESPACE create secret generic socketless-shared-secret --from-literal=shared-secret=$(openssl rand -hex 24)\n  --set sharedSecret.existingSecret=socketless-shared-secret\nor set sharedSecret.value, or sharedSecret.enabled=false for a backend nothing outside the cluster can reach" }}
{{- end }}
{{- end }}
{{- $pdb := .Values.podDisruptionBudget }}
{{- if and $pdb.enabled (kindIs "invalid" $pdb.maxUnavailable) (not (kindIs "invalid" $pdb.minAvailable)) (not (kindIs "string" $pdb.minAvailable)) }}
{{- if ge (int $pdb.minAvailable) (int (include "socketless.minReplicas" .)) }}
{{- fail (printf "podDisruptionBudget.minAvailable (%v) is not below the minimum replica count (%v): no pod could ever be evicted and node drains would block. Use podDisruptionBudget.maxUnavailable: 1, or more replicas" $pdb.minAvailable (include "socketless.minReplicas" .)) }}
{{- end }}
{{- end }}
{{- if $pdb.enabled }}
{{- include "socketless.checkPdbValue" (list "podDisruptionBudget" $pdb.maxUnavailable $pdb.minAvailable) }}
{{- end }}
{{- if .Values.gateway.enabled }}
{{- if .Values.gateway.podDisruptionBudget.enabled }}
{{- include "socketless.checkPdbValue" (list "gateway.podDisruptionBudget" .Values.gateway.podDisruptionBudget.maxUnavailable nil) }}
{{- end }}
{{- include "socketless.checkGatewayMemory" . }}
{{- $sts := include "socketless.gatewayName" . }}
{{- if gt (len $sts) 52 }}
{{- fail (printf "the gateway's StatefulSet name %q has %d characters, more than 52: its pods' controller-revision-hash label (the name, a dash and a 10-character hash) must fit 63. Use a shorter release name or set fullnameOverride" $sts (len $sts)) }}
{{- end }}
{{- end }}
{{- if .Values.app.enabled }}
{{- if semverCompare "<1.29-0" .Capabilities.KubeVersion.Version }}
{{- fail (printf "app.enabled=true runs the app as a native sidecar (an init container with restartPolicy: Always), which needs Kubernetes 1.29 or later; this cluster is %s. Upgrade the cluster or set app.enabled=false" .Capabilities.KubeVersion.Version) }}
{{- end }}
{{- end }}
{{- $t := .Values.internalApi.token }}
{{- if and $t.existingSecret $t.value }}
{{- fail "internalApi.token: set existingSecret or value, not both" }}
{{- end }}
{{- if and .Values.networkPolicy.enabled .Values.serviceMonitor.enabled (not .Values.networkPolicy.internalFrom) }}
{{- fail "networkPolicy.enabled and serviceMonitor.enabled with an empty networkPolicy.internalFrom: the NetworkPolicy would admit no pod to the internal port (9090), so Prometheus could never scrape /metrics. Add the Prometheus namespace or pods to networkPolicy.internalFrom, e.g. - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitoring}}" }}
{{- end }}
{{- $k := .Values.keda }}
{{- if $k.enabled }}
{{- if gt (int $k.minReplicaCount) (int $k.maxReplicaCount) }}
{{- fail (printf "keda.minReplicaCount (%v) is greater than keda.maxReplicaCount (%v): KEDA refuses the ScaledObject. Raise keda.maxReplicaCount" $k.minReplicaCount $k.maxReplicaCount) }}
{{- end }}
{{- if and $k.fallback.enabled $k.cpu.enabled }}
{{- fail "keda.fallback.enabled with the keda.cpu trigger: KEDA refuses a fallback on a ScaledObject with a cpu or memory trigger. Disable keda.fallback, or use autoscaling (the HPA) for CPU" }}
{{- end }}
{{- if and $k.cloudwatch.enabled (eq $k.cloudwatch.identityOwner "workload") }}
{{- fail "keda.cloudwatch.identityOwner=workload makes KEDA use the backend's own role, and the stack grants the backend no cloudwatch:GetMetricData: the trigger would fail. Set keda.cloudwatch.roleArn to the stack's KedaRoleArn output, or leave roleArn and identityOwner empty and give KEDA's operator the KedaRoleArn (docs/helm.md, \"KEDA's AWS identity\")" }}
{{- end }}
{{- end }}
{{- if eq .Values.service.type "LoadBalancer" }}
{{- $lb := .Values.service.loadBalancer }}
{{- if lt (int $c.shutdownDelaySeconds) (int $lb.controllerLagSeconds) }}
{{- fail (printf "config.shutdownDelaySeconds (%v) is shorter than service.loadBalancer.controllerLagSeconds (%v): the NLB keeps sending new connections until the AWS Load Balancer Controller has deregistered the pod. Raise config.shutdownDelaySeconds (and terminationGracePeriodSeconds)" $c.shutdownDelaySeconds $lb.controllerLagSeconds) }}
{{- end }}
{{- if lt (int $lb.deregistrationDelaySeconds) (int $c.drainTimeoutSeconds) }}
{{- fail (printf "service.loadBalancer.deregistrationDelaySeconds (%v) must be at least config.drainTimeoutSeconds (%v): the deregistration delay is how long the NLB lets connections to a deregistered target finish, so it must cover the longest request the pod drains. Raise service.loadBalancer.deregistrationDelaySeconds" $lb.deregistrationDelaySeconds $c.drainTimeoutSeconds) }}
{{- end }}
{{- end }}
{{- end }}

{{/* A Kubernetes memory quantity in bytes (plain, Ki/Mi/Gi/Ti or k/M/G/T); empty when it has
another form (a decimal fraction, an exponent). */}}
{{- define "socketless.quantityBytes" -}}
{{- $q := . }}
{{- if kindIs "float64" $q }}{{ $q = int64 $q }}{{ end }}
{{- $q = toString $q }}
{{- $out := "" }}
{{- range list (list "Ki" 1024) (list "Mi" 1048576) (list "Gi" 1073741824) (list "Ti" 1099511627776) (list "k" 1000) (list "M" 1000000) (list "G" 1000000000) (list "T" 1000000000000) }}
{{- if and (eq $out "") (hasSuffix (index . 0) $q) }}
{{- $n := trimSuffix (index . 0) $q }}
{{- if regexMatch "^[0-9]+$" $n }}{{ $out = toString (mul (int64 $n) (index . 1)) }}{{ end }}
{{- end }}
{{- end }}
{{- if and (eq $out "") (regexMatch "^[0-9]+$" $q) }}{{ $out = $q }}{{ end }}
{{- $out }}
{{- end }}

{{/* The gateway's worst-case memory (the formula in values.yaml, gateway.memory) must fit its
memory limit with a tenth to spare, or a crowd of hostile clients gets the pod OOM-killed and
every honest client's connection with it. No limit, no check. */}}
{{- define "socketless.checkGatewayMemory" -}}
{{- $g := .Values.gateway }}
{{- $limit := dig "limits" "memory" "" $g.resources }}
{{- if $limit }}
{{- $bytes := include "socketless.quantityBytes" $limit }}
{{- if not $bytes }}
{{- fail (printf "gateway.resources.limits.memory (%v): write it as bytes or with a Ki/Mi/Gi suffix (e.g. 512Mi), so the chart can check the memory budgets against it" $limit) }}
{{- end }}
{{- $m := $g.memory }}
{{- $mib := 1048576 }}
{{- $worst := add (mul 10 $mib) (int64 $m.maxBufferedBodyBytes) (int64 $m.maxPendingMessageBytes) (int64 $m.maxOutboundBytes) (mul 32768 (int64 $g.maxConnections)) }}
{{- if gt (mul $worst 10) (mul (int64 $bytes) 9) }}
{{- fail (printf "the gateway's worst-case memory, 10 MiB + gateway.memory.maxBufferedBodyBytes (%v) + gateway.memory.maxPendingMessageBytes (%v) + gateway.memory.maxOutboundBytes (%v) + 32 KiB × gateway.maxConnections (%v) = %d MiB, does not fit gateway.resources.limits.memory (%v) with a tenth to spare: raise the limit to at least %d Mi, or lower gateway.maxConnections or the budgets" (int64 $m.maxBufferedBodyBytes) (int64 $m.maxPendingMessageBytes) (int64 $m.maxOutboundBytes) (int64 $g.maxConnections) (div $worst $mib) $limit (add1 (div (mul $worst 10) (mul $mib 9)))) }}
{{- end }}
{{- end }}
{{- end }}
