{{/*
The namespaces the operator watches and holds rights in, as a JSON list; [] means every namespace
(rbac.clusterWide). Default: the release namespace only (least privilege).
*/}}
{{- define "gridwise.watchNamespaces" -}}
{{- if .Values.rbac.clusterWide -}}
[]
{{- else if .Values.watchNamespaces -}}
{{- toJson .Values.watchNamespaces -}}
{{- else -}}
{{- toJson (list .Release.Namespace) -}}
{{- end -}}
{{- end }}
