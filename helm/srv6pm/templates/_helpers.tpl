{{/* Names, labels and the argument/volume blocks the components share. */}}

{{- define "srv6pm.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "srv6pm.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* selector labels of one component: (dict "root" $ "component" "processor") */}}
{{- define "srv6pm.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "srv6pm.image" -}}
{{- $img := .root.Values.image -}}
{{- printf "%s%s:%s" $img.registry (index $img.repositories .component) ($img.tag | default .root.Chart.AppVersion) -}}
{{- end -}}

{{- define "srv6pm.common.args" -}}
- --log-format
- {{ .Values.logFormat }}
{{- if gt (int .Values.verbosity) 0 }}
- {{ printf "-%s" (repeat (int .Values.verbosity) "v") }}
{{- end }}
{{- end -}}

{{/* Kafka: flags, and files from Secrets (TLS material, SASL password). */}}
{{- define "srv6pm.kafka.args" -}}
{{- $k := .Values.kafka -}}
- --kafka
- {{ $k.bootstrap | quote }}
- --kafka-security-protocol
- {{ $k.securityProtocol }}
{{- if $k.tls.secretName }}
- --kafka-cafile
- /var/run/secrets/srv6pm/kafka-tls/{{ $k.tls.caKey }}
{{- if and $k.tls.certKey $k.tls.keyKey }}
- --kafka-certfile
- /var/run/secrets/srv6pm/kafka-tls/{{ $k.tls.certKey }}
- --kafka-keyfile
- /var/run/secrets/srv6pm/kafka-tls/{{ $k.tls.keyKey }}
{{- end }}
{{- end }}
{{- if $k.sasl.mechanism }}
- --kafka-sasl-mechanism
- {{ $k.sasl.mechanism }}
- --kafka-username
- {{ $k.sasl.username | quote }}
{{- end }}
{{- end -}}

{{- define "srv6pm.kafka.env" -}}
{{- if .Values.kafka.sasl.mechanism }}
- name: SRV6PM_KAFKA_PASSWORD_FILE
  value: /var/run/secrets/srv6pm/kafka-sasl/{{ .Values.kafka.sasl.passwordSecret.key }}
{{- end }}
{{- end -}}

{{- define "srv6pm.kafka.mounts" -}}
{{- if .Values.kafka.tls.secretName }}
- name: kafka-tls
  mountPath: /var/run/secrets/srv6pm/kafka-tls
  readOnly: true
{{- end }}
{{- if .Values.kafka.sasl.mechanism }}
- name: kafka-sasl
  mountPath: /var/run/secrets/srv6pm/kafka-sasl
  readOnly: true
{{- end }}
{{- end -}}

{{- define "srv6pm.kafka.volumes" -}}
{{- $k := .Values.kafka -}}
{{- if $k.tls.secretName }}
- name: kafka-tls
  secret:
    secretName: {{ $k.tls.secretName }}
    defaultMode: 0440
{{- end }}
{{- if $k.sasl.mechanism }}
- name: kafka-sasl
  secret:
    secretName: {{ required "kafka.sasl.passwordSecret.name is required with kafka.sasl.mechanism" $k.sasl.passwordSecret.name }}
    defaultMode: 0440
    items:
      - key: {{ $k.sasl.passwordSecret.key }}
        path: {{ $k.sasl.passwordSecret.key }}
{{- end }}
{{- end -}}

{{/* InfluxDB (processor): flags, token and CA from Secrets. */}}
{{- define "srv6pm.influx.args" -}}
{{- $i := .Values.influxdb -}}
- --influx-url
- {{ $i.url | quote }}
- --influx-org
- {{ $i.org | quote }}
- --influx-bucket
- {{ $i.bucket | quote }}
{{- if $i.caSecret.name }}
- --influx-cafile
- /var/run/secrets/srv6pm/influxdb-ca/{{ $i.caSecret.key }}
{{- end }}
{{- end -}}

{{- define "srv6pm.influx.env" -}}
{{- if .Values.influxdb.tokenSecret.name }}
- name: SRV6PM_INFLUX_TOKEN_FILE
  value: /var/run/secrets/srv6pm/influxdb-token/{{ .Values.influxdb.tokenSecret.key }}
{{- end }}
{{- end -}}

{{- define "srv6pm.influx.mounts" -}}
{{- if .Values.influxdb.tokenSecret.name }}
- name: influxdb-token
  mountPath: /var/run/secrets/srv6pm/influxdb-token
  readOnly: true
{{- end }}
{{- if .Values.influxdb.caSecret.name }}
- name: influxdb-ca
  mountPath: /var/run/secrets/srv6pm/influxdb-ca
  readOnly: true
{{- end }}
{{- end -}}

{{- define "srv6pm.influx.volumes" -}}
{{- $i := .Values.influxdb -}}
{{- if $i.tokenSecret.name }}
- name: influxdb-token
  secret:
    secretName: {{ $i.tokenSecret.name }}
    defaultMode: 0440
    items:
      - key: {{ $i.tokenSecret.key }}
        path: {{ $i.tokenSecret.key }}
{{- end }}
{{- if $i.caSecret.name }}
- name: influxdb-ca
  secret:
    secretName: {{ $i.caSecret.name }}
    defaultMode: 0440
    items:
      - key: {{ $i.caSecret.key }}
        path: {{ $i.caSecret.key }}
{{- end }}
{{- end -}}

{{/* Pod and container security of the components that need no privileges. */}}
{{- define "srv6pm.unprivileged.podSecurity" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "srv6pm.unprivileged.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: [ALL]
{{- end -}}

{{- define "srv6pm.metricsProbes" -}}
livenessProbe:
  httpGet:
    path: /metrics
    port: metrics
  initialDelaySeconds: 10
  periodSeconds: 20
  timeoutSeconds: 5
  failureThreshold: 3
readinessProbe:
  httpGet:
    path: /metrics
    port: metrics
  periodSeconds: 10
  timeoutSeconds: 5
{{- end -}}
