// TensorRT IPluginV3 plugin "MaskedQueryGather" (namespace "s3rt", version "1").
//
// Calls the fused kernel of ../masked_query_gather.cu; semantics: ../reference.py.
//
// I/O (all kLINEAR; T = kFLOAT or kHALF, the same for pixel, query_key and gathered):
//   in  0  pixel       (BN, P, C)  T       pixel tokens + positional embedding, not normalised
//   in  1  query_key   (BN, Q, C)  T       L2-normalised query keys
//   in  2  foreground  (BN, P)     kINT32  nonzero = foreground (plugins take no kBOOL tensors)
//   out 0  gathered    (BN, Q, C)  T
//   out 1  index       (BN, H, Q)  kINT32  argmax pixel per (object, head, query)
// Attribute / plugin field: num_heads (kINT32; kINT64, kINT16 and kINT8 accepted on creation).
// Needs C == 256 and num_heads in {1, 2, 4, 8, 16, 32}.
//
// The ONNX node that maps to it (torch_op.onnx_translation_table):
//   s3rt::MaskedQueryGather(pixel, query_key, foreground_i32) -> (gathered, index_i32)
//   attributes num_heads:int, plugin_namespace="s3rt", plugin_version="1"
//
// Registration: the library exports getCreators()/setLoggerFinder() (IPluginRegistry::loadLibrary,
// trtexec --dynamicPlugins, version-compatible engines) and s3rt_register_trt_plugins() for
// applications that dlopen it (ctypes.CDLL(path).s3rt_register_trt_plugins()). Use one of the
// two in a process, not both.

#ifndef S3RT_MASKED_QUERY_GATHER_PLUGIN_H
#define S3RT_MASKED_QUERY_GATHER_PLUGIN_H

#include <NvInferRuntime.h>

#include <cstdint>
#include <string>
#include <vector>

namespace s3rt
{
namespace plugin
{

constexpr char const* kMQG_PLUGIN_NAME = "MaskedQueryGather";
constexpr char const* kMQG_PLUGIN_VERSION = "1";
constexpr char const* kMQG_PLUGIN_NAMESPACE = "s3rt";

class MaskedQueryGatherPlugin : public nvinfer1::IPluginV3,
                                public nvinfer1::IPluginV3OneCore,
                                public nvinfer1::IPluginV3OneBuild,
                                public nvinfer1::IPluginV3OneRuntime
{
public:
    explicit MaskedQueryGatherPlugin(int32_t numHeads);
    MaskedQueryGatherPlugin(MaskedQueryGatherPlugin const& other);
    MaskedQueryGatherPlugin& operator=(MaskedQueryGatherPlugin const&) = delete;
    ~MaskedQueryGatherPlugin() override = default;

    // IPluginV3
    nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override;
    nvinfer1::IPluginV3* clone() noexcept override;

    // IPluginV3OneCore
    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;

    // IPluginV3OneBuild
    int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
    int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
        nvinfer1::DataType const* inputTypes, int32_t nbInputs) const noexcept override;
    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs,
        nvinfer1::DimsExprs const* shapeInputs, int32_t nbShapeInputs, nvinfer1::DimsExprs* outputs,
        int32_t nbOutputs, nvinfer1::IExprBuilder& exprBuilder) noexcept override;
    bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
        int32_t nbOutputs) noexcept override;
    int32_t getNbOutputs() const noexcept override;
    size_t getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* outputs, int32_t nbOutputs) const noexcept override;
    char const* getMetadataString() noexcept override;

    // IPluginV3OneRuntime
    int32_t onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::PluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;
    nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* context) noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override;

private:
    void bindFields();

    int32_t mNumHeads;
    std::string mMetadata;
    std::vector<nvinfer1::PluginField> mFields;
    nvinfer1::PluginFieldCollection mFieldCollection{};
};

class MaskedQueryGatherPluginCreator : public nvinfer1::IPluginCreatorV3One
{
public:
    MaskedQueryGatherPluginCreator();
    ~MaskedQueryGatherPluginCreator() override = default;

    nvinfer1::IPluginV3* createPlugin(
        char const* name, nvinfer1::PluginFieldCollection const* fc, nvinfer1::TensorRTPhase phase) noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override;
    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;

private:
    std::vector<nvinfer1::PluginField> mFieldNames;
    nvinfer1::PluginFieldCollection mFieldCollection{};
};

} // namespace plugin
} // namespace s3rt

extern "C"
{
    // TensorRT's entry points for plugin libraries loaded with IPluginRegistry::loadLibrary.
    void setLoggerFinder(nvinfer1::ILoggerFinder* finder);
    nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators);
    // Registers the creator with getPluginRegistry() once; 1 on success (or already registered).
    int32_t s3rt_register_trt_plugins();
}

#endif // S3RT_MASKED_QUERY_GATHER_PLUGIN_H
