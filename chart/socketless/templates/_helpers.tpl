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

{{/* Every gateway replica's base URL, in ordinal order, comma-separated (--peers). */}}
{{- define "socketless.gatewayPeers" -}}
{{- $peers := list }}
{{- range $i := until (int .Values.gateway.replicaCount) }}
{{- $peers = append $peers (printf "http://%s-%d.%s.%s.svc:%v" (include "socketless.gatewayName" $) $i (include "socketless.gatewayHeadlessName" $) $.Release.Namespace $.Values.gateway.service.port) }}
{{- end }}
{{- join "," $peers }}
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
A checksum of what the pods read at start: the Secret the chart creates (or the name of an
existing one) and the rendered settings. A change rolls the pods; environment variables are
read only at start. An existing Secret's content is not visible to Helm: rename the Secret
(or use a reloader) when you rotate it.
*/}}
{{- define "socketless.configChecksum" -}}
{{- $in := dict "secret" (include (print .Template.BasePath "/secret.yaml") .) "existing" .Values.sharedSecret.existingSecret "config" .Values.config "extraEnv" .Values.extraEnv "gateway" .Values.gateway "app" .Values.app }}
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
{{- end }}
