"""Response shapes of ALeRCE's ZTF API v1 (as its public client reads them), for our tables."""
from rest_framework import serializers

from pipeline.api.queries import OBJECT_COLUMNS
from pipeline.models import Detection, Feature, MagStats, NonDetection, Object, Probability


class ObjectSerializer(serializers.ModelSerializer):
    class Meta:
        model = Object
        fields = OBJECT_COLUMNS + ("simulated",)


class ObjectListItemSerializer(ObjectSerializer):
    classifier = serializers.CharField(allow_null=True, help_text="Classifier of the class row")
    probability = serializers.FloatField(allow_null=True)

    class Meta(ObjectSerializer.Meta):
        fields = ObjectSerializer.Meta.fields + ("class", "classifier", "probability")


# "class" is a Python keyword: declared after the class body
ObjectListItemSerializer._declared_fields["class"] = serializers.CharField(
    allow_null=True, help_text="Top class (ranking 1) of the classifier, or of the filter's ranking")


class ObjectPageSerializer(serializers.Serializer):
    total = serializers.IntegerField(allow_null=True, help_text="Objects matching (null unless count=true)")
    page = serializers.IntegerField()
    next = serializers.IntegerField(allow_null=True)
    has_next = serializers.BooleanField()
    prev = serializers.IntegerField(allow_null=True)
    has_prev = serializers.BooleanField()
    items = ObjectListItemSerializer(many=True)


class DetectionSerializer(serializers.ModelSerializer):
    candid = serializers.CharField(help_text="Alert candidate id (a string, as ALeRCE sends it)")
    parent_candid = serializers.CharField(allow_null=True, help_text="Alert that delivered this detection")

    class Meta:
        model = Detection
        exclude = ("id", "oid")  # id: the table's own key, not ALeRCE's


class NonDetectionSerializer(serializers.ModelSerializer):
    class Meta:
        model = NonDetection
        fields = ("mjd", "fid", "diffmaglim")


class LightcurveSerializer(serializers.Serializer):
    detections = DetectionSerializer(many=True)
    non_detections = NonDetectionSerializer(many=True)


class MagStatsSerializer(serializers.ModelSerializer):
    class Meta:
        model = MagStats
        exclude = ("id", "oid")


class ProbabilitySerializer(serializers.ModelSerializer):
    class Meta:
        model = Probability
        fields = ("classifier_name", "classifier_version", "class_name", "probability", "ranking")


class FeatureSerializer(serializers.ModelSerializer):
    class Meta:
        model = Feature
        fields = ("name", "value", "fid", "version", "missing_reason")


class ClassifierSerializer(serializers.Serializer):
    classifier_name = serializers.CharField()
    classifier_version = serializers.CharField()
    classes = serializers.ListField(child=serializers.CharField())


class ClassSerializer(serializers.Serializer):
    name = serializers.CharField()


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField()
    errors = serializers.DictField(child=serializers.CharField(), required=False)
