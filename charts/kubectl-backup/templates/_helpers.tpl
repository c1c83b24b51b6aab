{{/*
Names are fixed, as with `kubectl backup install` (core/src/install.rs): the plugin and the webhook
look for these objects by name.
*/}}
{{- define "kubectl-backup.app" -}}backup-webhook{{- end }}
{{- define "kubectl-backup.tlsSecret" -}}backup-webhook-tls{{- end }}

{{/* Labels of every object; the selector uses only app.kubernetes.io/name, like install. */}}
{{- define "kubectl-backup.labels" -}}
app.kubernetes.io/name: backup-webhook
app.kubernetes.io/part-of: kubectl-backup
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{- define "kubectl-backup.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/* The Secret with the store's credentials, or nothing. */}}
{{- define "kubectl-backup.credentialsSecret" -}}
{{- if .Values.credentials.create -}}
{{ .Values.credentials.secretName | default "backup-webhook-credentials" }}
{{- else -}}
{{ .Values.credentials.secretName }}
{{- end -}}
{{- end }}

{{/* The DNS names of the webhook Service, as in install.rs generate_tls. */}}
{{- define "kubectl-backup.dnsNames" -}}
{{- $svc := printf "backup-webhook.%s.svc" .Release.Namespace -}}
{{- list "backup-webhook" (printf "backup-webhook.%s" .Release.Namespace) $svc (printf "%s.cluster.local" $svc) | toJson -}}
{{- end }}

{{/* The controller's ServiceAccount: created by the chart, or an existing one (serviceAccount.create=false). */}}
{{- define "kubectl-backup.serviceAccountName" -}}
{{- .Values.serviceAccount.name | default "backup-webhook" -}}
{{- end }}
