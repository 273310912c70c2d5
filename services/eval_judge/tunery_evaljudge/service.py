"""gRPC EvalJudge service."""

from tunery.evaljudge.v1 import evaljudge_pb2, evaljudge_pb2_grpc

from tunery_evaljudge.graders.basic import exact_match, json_valid


class EvalJudgeService(evaljudge_pb2_grpc.EvalJudgeServicer):
    async def GradeSamples(self, request, context):
        grades = [
            evaljudge_pb2.SampleGrade(
                exact_match=exact_match(s.output, s.reference), json_valid=json_valid(s.output)
            )
            for s in request.samples
        ]
        n = len(grades) or 1
        return evaljudge_pb2.GradeSamplesResponse(
            grades=grades,
            exact_match_rate=sum(g.exact_match for g in grades) / n,
            json_valid_rate=sum(g.json_valid for g in grades) / n,
        )
