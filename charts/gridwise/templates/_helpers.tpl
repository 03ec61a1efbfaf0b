{{/* Chart name, truncated to the 63 characters label values allow. */}}
{{- define "gridwise.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name: release-chart unless the release name already contains the chart name. */}}
{{- define "gridwise.fullname" -}}
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

{{- define "gridwise.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Common labels (Helm best practices). */}}
{{- define "gridwise.labels" -}}
helm.sh/chart: {{ include "gridwise.chart" . }}
{{ include "gridwise.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: gridwise
{{- end }}

{{/* Selector labels: immutable in a Deployment, so only name, instance and component. */}}
{{- define "gridwise.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gridwise.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "gridwise.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "gridwise.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "gridwise.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
Whether to render a Prometheus Operator resource: (list $ "ServiceMonitor" .Values.serviceMonitor "serviceMonitor").
Enabled and the cluster serves monitoring.coreos.com/v1/<kind>: "true". Enabled without that API: nothing
(NOTES say it was left out), or, with `required: true`, a failed install that names the missing CRD.
*/}}
{{- define "gridwise.monitoringEnabled" -}}
{{- $root := index . 0 -}}
{{- $kind := index . 1 -}}
{{- $cfg := index . 2 -}}
{{- $key := index . 3 -}}
{{- if $cfg.enabled -}}
{{- if $root.Capabilities.APIVersions.Has (printf "monitoring.coreos.com/v1/%s" $kind) -}}
true
{{- else if $cfg.required -}}
{{- fail (printf "%s.enabled and %s.required are set, but this cluster has no monitoring.coreos.com/v1 %s: install the Prometheus Operator CRDs (e.g. kube-prometheus-stack) first, set %s.required=false to install without it, or with `helm template` pass --api-versions monitoring.coreos.com/v1/%s" $key $key $kind $key $kind) -}}
{{- end -}}
{{- end -}}
{{- end }}

{{/* Labels the operator's builders put on every trainer pod (gridwise/k8s/builders.py common_labels). */}}
{{- define "gridwise.trainerSelectorLabels" -}}
app.kubernetes.io/managed-by: gridwise
app.kubernetes.io/name: gridwise-trainer
{{- end }}

{{/*
Base URL trainer pods reach the operator at (`--signal-url`): operator.signal.url, else the chart's Service.
Empty when operator.signal is off, or without a Service and a url: trainers are then not told.
*/}}
{{- define "gridwise.signalURL" -}}
{{- if .Values.operator.signal.enabled -}}
{{- if .Values.operator.signal.url -}}
{{- .Values.operator.signal.url | trimSuffix "/" -}}
{{- else if .Values.service.enabled -}}
{{- printf "http://%s.%s.svc:%d" (include "gridwise.fullname" .) .Release.Namespace (.Values.service.port | int) -}}
{{- end -}}
{{- end -}}
{{- end }}
