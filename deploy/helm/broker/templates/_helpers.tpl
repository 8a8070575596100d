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

{{/* The broker's settings file (values: config), parsed; a file that is not TOML is refused. */}}
{{- define "broker.settings" -}}
{{- $settings := fromToml .Values.config -}}
{{- if $settings.Error -}}
{{- fail (printf "config is not valid TOML: %s" $settings.Error) -}}
{{- end -}}
{{- toJson $settings -}}
{{- end -}}

{{/* server.public_url from config: the URL clients use. Without it the broker would name
     itself http://0.0.0.0:8000 (its listening address) in every link and SAML endpoint. */}}
{{- define "broker.publicUrl" -}}
{{- $server := (include "broker.settings" . | fromJson).server | default dict -}}
{{- required "config must set server.public_url (the URL clients use to reach the broker)" $server.public_url -}}
{{- end -}}

{{/* Whether e-mail is on (sso.smtp_url or sso.smtp_from in config, or secret.smtpUrl): the
     NetworkPolicy must then let the pods reach the SMTP server. */}}
{{- define "broker.mail" -}}
{{- $sso := (include "broker.settings" . | fromJson).sso | default dict -}}
{{- if or $sso.smtp_url $sso.smtp_from .Values.secret.smtpUrl }}true{{ end -}}
{{- end -}}
