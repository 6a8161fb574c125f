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

{{- define "socketless.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Name and key of the Secret holding the shared secret, if any. */}}
{{- define "socketless.secretName" -}}
{{- if .Values.sharedSecret.existingSecret }}
{{- .Values.sharedSecret.existingSecret }}
{{- else if .Values.sharedSecret.create }}
{{- printf "%s-shared-secret" (include "socketless.fullname" .) }}
{{- end }}
{{- end }}

{{- define "socketless.secretKey" -}}
{{- if .Values.sharedSecret.existingSecret }}{{ .Values.sharedSecret.existingSecretKey }}{{ else }}shared-secret{{ end }}
{{- end }}

{{/* The gateway's in-cluster ws:// URL. */}}
{{- define "socketless.gatewayUrl" -}}
{{- printf "ws://%s.%s.svc:%v/%s" (include "socketless.gatewayName" .) .Release.Namespace .Values.gateway.service.port .Values.gateway.stage }}
{{- end }}

{{/* Hardened container settings shared by every container. */}}
{{- define "socketless.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "socketless.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Render-time checks that the schema cannot express. */}}
{{- define "socketless.checks" -}}
{{- $needed := add .Values.config.shutdownDelaySeconds .Values.config.drainTimeoutSeconds 2 }}
{{- if le (int .Values.terminationGracePeriodSeconds) (int $needed) }}
{{- fail (printf "terminationGracePeriodSeconds (%v) must exceed config.shutdownDelaySeconds + config.drainTimeoutSeconds + 2 s (= %v), or Kubernetes kills pods mid-drain" .Values.terminationGracePeriodSeconds $needed) }}
{{- end }}
{{- if .Values.gateway.enabled }}
{{- $gw := add .Values.gateway.shutdownDelaySeconds .Values.gateway.drainTimeoutSeconds 2 }}
{{- if le (int .Values.gateway.terminationGracePeriodSeconds) (int $gw) }}
{{- fail (printf "gateway.terminationGracePeriodSeconds (%v) must exceed gateway.shutdownDelaySeconds + gateway.drainTimeoutSeconds + 2 s (= %v)" .Values.gateway.terminationGracePeriodSeconds $gw) }}
{{- end }}
{{- end }}
{{- if and .Values.keda.enabled .Values.autoscaling.enabled }}
{{- fail "keda.enabled and autoscaling.enabled are both true: choose one owner of the replica count" }}
{{- end }}
{{- if and .Values.ingress.enabled (gt (int .Values.ingress.deregistrationDelaySeconds) (int .Values.config.shutdownDelaySeconds)) }}
{{- fail (printf "ingress.deregistrationDelaySeconds (%v) must not exceed config.shutdownDelaySeconds (%v): the ALB must stop sending before the pod stops accepting" .Values.ingress.deregistrationDelaySeconds .Values.config.shutdownDelaySeconds) }}
{{- end }}
{{- if and (eq .Values.config.store "memory") (or .Values.keda.enabled .Values.autoscaling.enabled (gt (int .Values.replicaCount) 1)) }}
{{- fail "config.store=memory keeps sessions in one pod: use dynamodb with more than one replica or an autoscaler" }}
{{- end }}
{{- end }}
