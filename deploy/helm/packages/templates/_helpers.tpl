{{/* Names and labels */}}
{{- define "packages.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "packages.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "packages.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "packages.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* The environment of every process: addresses, settings, and secrets by reference. */}}
{{- define "packages.env" -}}
- name: KAFKA_BOOTSTRAP_SERVERS
  value: {{ .Values.kafka.bootstrapServers | quote }}
- name: PACKAGES_KAFKA_SECURITY_PROTOCOL
  value: {{ .Values.kafka.securityProtocol | quote }}
{{- if .Values.kafka.saslMechanism }}
- name: PACKAGES_KAFKA_SASL_MECHANISM
  value: {{ .Values.kafka.saslMechanism | quote }}
{{- end }}
{{- with .Values.kafka.credentialsSecret }}
{{- if .name }}
- name: PACKAGES_KAFKA_SASL_USERNAME
  valueFrom:
    secretKeyRef: {name: {{ .name | quote }}, key: {{ .usernameKey | quote }}}
- name: PACKAGES_KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ .name | quote }}, key: {{ .passwordKey | quote }}}
{{- end }}
{{- end }}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ required "database.urlSecret.name: the Secret holding DATABASE_URL" .Values.database.urlSecret.name | quote }}
      key: {{ .Values.database.urlSecret.key | quote }}
- name: PACKAGES_DATABASE_SSL
  value: {{ .Values.database.ssl | quote }}
- name: PACKAGES_TOPIC_REPLICATION_FACTOR
  value: {{ .Values.topics.replicationFactor | quote }}
- name: PACKAGES_TOPIC_MIN_INSYNC_REPLICAS
  value: {{ .Values.topics.minInsyncReplicas | quote }}
{{- range $name, $value := .Values.settings }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
{{- end -}}

{{/* The pod's common parts: security, the image, a writable /tmp on a read-only root. */}}
{{- define "packages.podSpec" -}}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets: {{ toYaml . | nindent 2 }}
{{- end }}
securityContext: {{ toYaml .root.Values.podSecurityContext | nindent 2 }}
volumes:
  - name: tmp
    emptyDir: {}
{{- end -}}

{{- define "packages.container" -}}
image: {{ include "packages.image" .root | quote }}
imagePullPolicy: {{ .root.Values.image.pullPolicy }}
args: {{ toJson .args }}
securityContext: {{ toYaml .root.Values.securityContext | nindent 2 }}
volumeMounts:
  - name: tmp
    mountPath: /tmp
{{- end -}}

{{/* Partitions of each declared topic, and the ceiling of a worker's replicas. */}}
{{- define "packages.ceiling" -}}
{{- $partitions := dict -}}
{{- range (.root.Files.Get "files/topics.json" | fromJsonArray) -}}
{{- $_ := set $partitions .name (int .partitions) -}}
{{- end -}}
{{- $ceiling := 0 -}}
{{- range .worker.topics -}}
{{- if not (hasKey $partitions .) -}}
{{- fail (printf "workers.%s.topics: %s is not a declared topic" $.name .) -}}
{{- end -}}
{{- $p := get $partitions . -}}
{{- if or (eq $ceiling 0) (lt $p $ceiling) -}}{{- $ceiling = $p -}}{{- end -}}
{{- end -}}
{{- $ceiling -}}
{{- end -}}
