{{/* Names and labels shared by every object of the chart. */}}

{{- define "broker.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "broker.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "broker.selectorLabels" -}}
app.kubernetes.io/name: {{ include "broker.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "broker.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "broker.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "broker.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "broker.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "broker.secretName" -}}
{{- default (include "broker.fullname" .) .Values.secret.existingSecret -}}
{{- end -}}

{{/* Where the keyring Secret is mounted: a directory, never a subPath, so that a rotated
     keyring reaches running pods (the kubelet swaps the directory; subPath mounts never
     change) and each process re-reads it within keyring.check_interval_seconds. */}}
{{- define "broker.keyringDir" -}}/etc/broker/keyring{{- end -}}
