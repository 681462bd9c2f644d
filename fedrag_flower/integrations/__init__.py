"""The shared fine-tuned RAG system inside other frameworks: LlamaIndex
(``fedrag_flower.integrations.llama_index``) and LangChain
(``fedrag_flower.integrations.langchain``). Each needs its optional extra:
``pip install 'fedrag-flower[llamaindex]'`` or ``'fedrag-flower[langchain]'``."""
